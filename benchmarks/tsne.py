"""t-SNE wall time and quality: openTSNE as the workflow calls it against scikit-learn's TSNE.

Both embed the same points, in one run, with the same thread count:

1. openTSNE  ``longtail.plots.tsne_embedding`` (the call every t-SNE figure rule makes: openTSNE
             defaults, perplexity 30, 250 early-exaggeration + 500 iterations; its negative
             gradient is FFT-interpolated from 10,000 points on, Barnes-Hut below)
2. sklearn   ``sklearn.manifold.TSNE`` with its defaults (Barnes-Hut, angle 0.5, PCA init, auto
             learning rate), the same perplexity and the same total number of iterations (750,
             ``--sklearn-max-iter``; scikit-learn's own default is 1000)

Quality, so that a fast but poor embedding cannot win: the fraction of each point's 10 nearest
neighbours in the input space that are also among its 10 nearest in the embedding (kNN
preservation), and leave-one-out 1-NN class accuracy in the embedding (and, for reference, in the
input space).

Data: clustered Gaussians with long-tailed cluster sizes (fixed seed), 10,000 x 512 by default, or
the ``feature`` column of a features parquet of the workflow (``--features``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tsne.py [--n 10000] [--dim 512] [--threads 2]
    .venv/bin/python benchmarks/tsne.py --n 2000 --dim 64          # quick run (~20 s)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from longtail.plots import tsne_embedding  # noqa: E402

PERPLEXITY = 30.0
K = 10  # neighbours for kNN preservation


def clustered_gaussians(n: int, dim: int, classes: int = 10, latent: int = 10, spread: float = 1.5,
                        noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 points: a mixture of `classes` unit Gaussians in a `latent`-dimensional space
    (centres ~ N(0, spread^2)), mapped into `dim` dimensions by a random orthonormal projection,
    plus N(0, noise^2) in every dimension. Cluster sizes fall geometrically 10:1 from head to tail.

    Like a network's embeddings, the points have a low intrinsic dimension, so their neighbourhoods
    mean something (isotropic 512-d noise would make every neighbour list random), and the clusters
    overlap a little: leave-one-out 1-NN accuracy in the input space is ~0.93."""
    rng = np.random.default_rng(seed)
    w = 10.0 ** (-np.arange(classes) / max(1, classes - 1))
    sizes = np.floor(w / w.sum() * n).astype(int)
    sizes[0] += n - sizes.sum()
    labels = np.repeat(np.arange(classes), sizes)
    z = rng.normal(0.0, spread, (classes, latent))[labels] + rng.normal(0.0, 1.0, (n, latent))  # (n, latent)
    proj = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T  # (latent, dim), orthonormal rows
    x = z @ proj + rng.normal(0.0, noise, (n, dim))
    perm = rng.permutation(n)
    return x[perm].astype(np.float32), labels[perm]


def features_parquet(path: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `feature` column of a workflow features parquet (known classes), subsampled to n rows."""
    import pandas as pd

    df = pd.read_parquet(path)
    df = df[df["label"] >= 0]
    if len(df) > n:
        df = df.sample(n=n, random_state=seed)
    return np.stack(df["feature"].to_numpy()).astype(np.float32), df["label"].to_numpy()


def knn_sets(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each point's k nearest other points."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    return idx[:, 1:]  # drop the point itself


def knn_preservation(high: np.ndarray, emb: np.ndarray, k: int = K) -> float:
    """Mean fraction of the k input-space neighbours that stay among the k embedding neighbours."""
    low = knn_sets(emb, k)
    return float((low[:, :, None] == high[:, None, :]).any(-1).mean())  # (n, k, k) -> (n, k)


def one_nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN class accuracy."""
    return float(np.mean(labels[knn_sets(x, 1)[:, 0]] == labels))


def run_sklearn(x: np.ndarray, max_iter: int, threads: int, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(perplexity=PERPLEXITY, max_iter=max_iter, random_state=seed, n_jobs=threads).fit_transform(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="points (default 10,000)")
    ap.add_argument("--dim", type=int, default=512, help="input dimensions (default 512)")
    ap.add_argument("--threads", type=int, default=2, help="n_jobs and OpenMP/BLAS threads of both")
    ap.add_argument("--sklearn-max-iter", type=int, default=750,
                    help="scikit-learn max_iter (750 = openTSNE's 250 + 500 iterations)")
    ap.add_argument("--features", help="a workflow features parquet instead of synthetic data")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    if args.features:
        x, labels = features_parquet(args.features, args.n)
        source = f"{args.features} ({len(x)} x {x.shape[1]})"
    else:
        x, labels = clustered_gaussians(args.n, args.dim)
        source = f"10 long-tailed Gaussian clusters (10-d latent), {args.n} x {args.dim}, seed 0"
    grad = "FFT" if len(x) >= 10_000 else "Barnes-Hut"
    print(f"t-SNE: {source}; perplexity {PERPLEXITY:g}; {args.threads} threads each; "
          f"cpus {os.cpu_count()}, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    # omp_set_num_threads / BLAS limits override OMP_NUM_THREADS=1 from the shell, so both
    # libraries really get `threads` (scikit-learn's Barnes-Hut gradient is OpenMP-parallel).
    with threadpool_limits(limits=args.threads):
        t0 = time.perf_counter()
        emb_o = tsne_embedding(x, PERPLEXITY, seed=0, n_jobs=args.threads)
        t_o = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb_s = run_sklearn(x, args.sklearn_max_iter, args.threads)
        t_s = time.perf_counter() - t0
        high = knn_sets(x, K)
        rows = [(f"openTSNE {grad} (750 it)", t_o, emb_o),
                (f"sklearn Barnes-Hut ({args.sklearn_max_iter} it)", t_s, emb_s)]
        quality = [(knn_preservation(high, e), one_nn_accuracy(e, labels)) for _, _, e in rows]
        base_acc = one_nn_accuracy(x, labels)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'variant':<{width}}  {'seconds':>8}  {'kNN-10 kept':>11}  {'1-NN acc':>8}")
    for (name, t, _), (kp, acc) in zip(rows, quality):
        print(f"{name:<{width}}  {t:8.1f}  {kp:11.3f}  {acc:8.3f}")
    print(f"(1-NN accuracy in the {x.shape[1]}-d input space: {base_acc:.3f})")
    print(f"ratio sklearn / openTSNE time: {t_s / t_o:.2f}x")


if __name__ == "__main__":
    main()
