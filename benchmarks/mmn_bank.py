"""MetaModelNet's few-shot bank: the batched one-vs-rest solver (one tensor program over every
class x k x subset) against fitting the same models one by one with scikit-learn's
LogisticRegression (lbfgs, C = 1/l2, the same sample weights, so the same objective).

Prints both times, the mean balanced test accuracy of the models from each path, their agreement
and the speed ratio, measured in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmn_bank.py                     # synthetic features
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmn_bank.py --features results/features/fmnist_lt/plain/seed0.parquet
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from longtail import metamodelnet as M  # noqa: E402

COUNTS = (1000, 469, 220, 103, 48, 22, 10, 5)  # the embedded Fashion-MNIST-LT profile


def synthetic(d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ReLU'd Gaussian classes (LeNet-like non-negative embeddings): train with COUNTS, test 500/class."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, (len(COUNTS), d))

    def draw(n_per):
        x = np.concatenate([means[c] + rng.normal(0, 1.5, (n, d)) for c, n in enumerate(n_per)])
        return np.maximum(x, 0).astype(np.float32), np.repeat(np.arange(len(n_per)), n_per)

    xt, yt = draw(COUNTS)
    xe, ye = draw([500] * len(COUNTS))
    return xt, yt, xe, ye


def load(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from longtail.pipeline import read_features

    f = read_features(path)
    return f["train"][0], f["train"][1], f["test"][0], f["test"][1]


def balanced_accuracy(theta: torch.Tensor, cls: np.ndarray, z: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(P,) balanced binary accuracy of each class-vs-rest model on the test features."""
    pred = (z @ theta.T) > 0  # (N, P)
    pos = y[:, None] == torch.as_tensor(cls)[None, :]
    tpr = (pred & pos).sum(0) / pos.sum(0).clamp_min(1)
    tnr = (~pred & ~pos).sum(0) / (~pos).sum(0).clamp_min(1)
    return ((tpr + tnr) / 2).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=None, help="a features parquet (train/test splits); default synthetic")
    ap.add_argument("--dim", type=int, default=128, help="feature size of the synthetic data")
    ap.add_argument("--subsets", type=int, default=16, help="S per (class, k)")
    ap.add_argument("--blocks", type=int, default=7, help="k = 1, 2, ..., 2^(blocks-1)")
    ap.add_argument("--negatives-per-class", type=int, default=32)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    xt, yt, xe, ye = load(args.features) if args.features else synthetic(args.dim, args.seed)
    dev = torch.device(args.device)
    x = torch.as_tensor(xt, device=dev)
    mean, scale = M.standardiser(x)
    z = M.augment(x, mean, scale)
    labels = torch.as_tensor(yt, device=dev)
    rng = np.random.default_rng(args.seed)
    pool = M.negative_pool(yt, args.negatives_per_class, rng)
    counts = np.bincount(yt)
    spec = M.draw_subsets(yt, M.bank_requests(counts, args.blocks, [args.subsets], "recur"), rng)
    print(f"bank: {len(spec)} models (classes x k x {args.subsets} subsets), {len(pool)} pooled negatives, "
          f"D+1 = {z.shape[1]}, device {dev}, torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    theta, info = M.fit_bank(z, labels, pool, spec, args.l2, args.max_iter, args.tol)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - t0

    from sklearn.linear_model import LogisticRegression

    zc = z.cpu().numpy()
    t0 = time.perf_counter()
    sk = np.zeros((len(spec), z.shape[1]), np.float32)
    for p in range(len(spec)):
        c = spec.model_class[p]
        pos = spec.pos_index[spec.pos_model == p]
        neg = pool[yt[pool] != c]
        xs = np.concatenate([zc[pos, :-1], zc[neg, :-1]])
        ys = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        sw = np.r_[np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))]
        clf = LogisticRegression(C=1.0 / args.l2, tol=args.tol, max_iter=1000).fit(xs, ys, sample_weight=sw)
        sk[p, :-1], sk[p, -1] = clf.coef_[0], clf.intercept_[0]
    t_sklearn = time.perf_counter() - t0

    ze = M.augment(torch.as_tensor(xe), mean.cpu(), scale.cpu())
    yet = torch.as_tensor(ye)
    acc_b = balanced_accuracy(theta.cpu(), spec.model_class, ze, yet)
    acc_s = balanced_accuracy(torch.as_tensor(sk), spec.model_class, ze, yet)
    agree = float((((ze @ theta.cpu().T) > 0) == ((ze @ torch.as_tensor(sk).T) > 0)).float().mean())
    problem = M.OneVsRestProblem(z.cpu(), labels.cpu(), pool, spec, args.l2)
    f_b = float(problem.value_and_grad(theta.cpu())[0].mean())
    f_s = float(problem.value_and_grad(torch.as_tensor(sk))[0].mean())
    print(f"batched : {t_batched:8.3f} s  ({1e3 * t_batched / len(spec):.3f} ms/model, {info.iterations} iterations, "
          f"{100 * info.converged:.1f} % converged)  mean objective {f_b:.6f}  mean balanced test acc {acc_b.mean():.4f}")
    print(f"sklearn : {t_sklearn:8.3f} s  ({1e3 * t_sklearn / len(spec):.3f} ms/model)"
          f"{'':37s}mean objective {f_s:.6f}  mean balanced test acc {acc_s.mean():.4f}")
    print(f"test predictions agreeing: {100 * agree:.2f} %   |acc difference| max {np.abs(acc_b - acc_s).max():.4f}")
    print(f"speed-up: {t_sklearn / t_batched:.1f}x")


if __name__ == "__main__":
    main()
