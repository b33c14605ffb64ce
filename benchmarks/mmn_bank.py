"""MetaModelNet's few-shot bank: the batched one-vs-rest solver (one tensor program over every
class x k x subset) against fitting the same models one by one with scikit-learn's
LogisticRegression (lbfgs, default tol 1e-4, C = 1/l2, the same sample weights, so the same
objective and the same stopping test max |gradient| < tol).

Prints, measured in one run: both paths' wall time and CPU time of this process (both paths are
single-threaded; on a shared machine the CPU time is the steadier figure), their ratios, the mean
objective of each path and the largest relative difference between them, the largest remaining
gradient of each, the mean balanced test accuracy of each path's models, the agreement of their
test predictions. Each path first runs once untimed (a 12-model bank / one fit) so one-off
library start-up costs (thread pools, MKL) count for neither; the batched path is then timed
``--repeat`` times and its median is compared with the one timed sklearn loop (itself an average
over every fit); the first timed batched run is printed too.

The bank is the paper's by default (S = 1000 for k = 1 down to 200 for k = 64: 24,255 models on
the embedded profile; the sklearn loop takes ~3.5 min); ``--subsets config`` is the default
config's CPU-scaled bank (836 models). Features: the main job's plain run when it exists, else
synthetic ones.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmn_bank.py                     # the paper's bank
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmn_bank.py --subsets config    # the CPU-scaled bank
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmn_bank.py --features synthetic
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from longtail.methods.metamodelnet import metanet as M  # noqa: E402

COUNTS = (1000, 469, 220, 103, 48, 22, 10, 5)  # the Fashion-MNIST-LT profile (config/presets/fmnist_lt.yaml)
TARGET_X = 50.0  # speed-up the batched bank must reach on the paper's bank size
DEFAULT_FEATURES = Path(__file__).resolve().parents[1] / "results/features/glyph_lt/plain/seed0.parquet"
PAPER_SUBSETS = (1000, 765, 585, 447, 342, 262, 200)  # S = 1000 for k = 1 down to 200 for k = 64 (the paper's bank)


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
    from longtail.contracts import read_features

    f = read_features(path)
    return f["train"][0], f["train"][1], f["test"][0], f["test"][1]


def balanced_accuracy(theta: torch.Tensor, cls: np.ndarray, z: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(P,) balanced binary accuracy of each class-vs-rest model on the test features."""
    pred = (z @ theta.T) > 0  # (N, P)
    pos = y[:, None] == torch.as_tensor(cls)[None, :]
    tpr = (pred & pos).sum(0) / pos.sum(0).clamp_min(1)
    tnr = (~pred & ~pos).sum(0) / (~pos).sum(0).clamp_min(1)
    return ((tpr + tnr) / 2).numpy()


def subset_schedule(arg: str) -> tuple[int, ...]:
    """S per k from the command line: 'paper', 'config' or a comma list."""
    if arg == "paper":
        return PAPER_SUBSETS
    if arg == "config":
        from longtail.methods.metamodelnet.config import MetaModelNetConfig

        return tuple(MetaModelNetConfig().subsets)
    return tuple(int(s) for s in arg.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=str(DEFAULT_FEATURES),
                    help="a features parquet (train/test splits) or 'synthetic'; default: the main job's plain run, "
                         "synthetic when it does not exist")
    ap.add_argument("--dim", type=int, default=128, help="feature size of the synthetic data")
    ap.add_argument("--subsets", default="paper",
                    help="S per k = 1, 2, 4, ... as a comma list (the last repeats), or 'paper' (S = 1000 for k = 1 "
                         "down to 200 for k = 64, the paper's bank) or 'config' (the default config's CPU-scaled bank)")
    ap.add_argument("--blocks", type=int, default=7, help="k = 1, 2, ..., 2^(blocks-1)")
    ap.add_argument("--negatives-per-class", type=int, default=32)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of the batched path (median reported)")
    ap.add_argument("--plain", action="store_true", help="batched path without the per-class preconditioner")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    real = args.features != "synthetic" and Path(args.features).exists()
    if args.features not in ("synthetic", str(DEFAULT_FEATURES)) and not real:
        sys.exit(f"error: --features {args.features} does not exist (run the main job or pass 'synthetic')")
    xt, yt, xe, ye = load(args.features) if real else synthetic(args.dim, args.seed)
    print(f"features: {args.features if real else f'synthetic ({args.dim}-d)'}")
    dev = torch.device(args.device)
    x = torch.as_tensor(xt, device=dev)
    mean, scale = M.standardiser(x)
    z = M.augment(x, mean, scale)
    labels = torch.as_tensor(yt, device=dev)
    rng = np.random.default_rng(args.seed)
    pool = M.negative_pool(yt, args.negatives_per_class, rng)
    counts = np.bincount(yt)
    subsets = subset_schedule(args.subsets)
    spec = M.draw_subsets(yt, M.bank_requests(counts, args.blocks, subsets, "recur"), rng)
    print(f"bank: {len(spec)} models (head classes x k x S, S per k = {list(subsets)}), {len(pool)} pooled negatives, "
          f"D+1 = {z.shape[1]}, device {dev}, torch threads {torch.get_num_threads()}")

    from sklearn.linear_model import LogisticRegression

    zc = z.cpu().numpy()

    def sklearn_fit(p: int) -> np.ndarray:
        c = spec.model_class[p]
        pos = spec.pos_index[spec.pos_model == p]
        neg = pool[yt[pool] != c]
        xs = np.concatenate([zc[pos, :-1], zc[neg, :-1]])
        ys = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        sw = np.r_[np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))]
        clf = LogisticRegression(C=1.0 / args.l2, tol=args.tol, max_iter=1000).fit(xs, ys, sample_weight=sw)
        return np.r_[clf.coef_[0], clf.intercept_[0]]

    # untimed warm-ups (start-up costs of the libraries), then each path once, timed
    warm = np.flatnonzero(np.arange(len(spec)) % max(1, len(spec) // 12) == 0)[:12]
    keep = np.isin(spec.pos_model, warm)
    warm_spec = M.BankSpec(spec.model_class[warm], spec.model_k[warm], spec.pos_index[keep],
                           np.searchsorted(warm, spec.pos_model[keep]))
    M.fit_bank(z, labels, pool, warm_spec, args.l2, args.max_iter, args.tol, precondition=not args.plain)
    sklearn_fit(0)

    runs = []
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        theta, info = M.fit_bank(z, labels, pool, spec, args.l2, args.max_iter, args.tol, precondition=not args.plain)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    (t_first, c_first), (t_batched, c_batched) = runs[0], tuple(np.median(np.array(runs), 0))
    print("batched runs (wall, cpu) s: " + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in runs))

    t0, c0 = time.perf_counter(), time.process_time()
    sk = np.stack([sklearn_fit(p) for p in range(len(spec))]).astype(np.float32)
    t_sklearn, c_sklearn = time.perf_counter() - t0, time.process_time() - c0

    ze = M.augment(torch.as_tensor(xe), mean.cpu(), scale.cpu())
    yet = torch.as_tensor(ye)
    acc_b = balanced_accuracy(theta.cpu(), spec.model_class, ze, yet)
    acc_s = balanced_accuracy(torch.as_tensor(sk), spec.model_class, ze, yet)
    agree = float((((ze @ theta.cpu().T) > 0) == ((ze @ torch.as_tensor(sk).T) > 0)).float().mean())
    problem = M.OneVsRestProblem(z.cpu(), labels.cpu(), pool, spec, args.l2)
    f_b, g_b = problem.value_and_grad(theta.cpu())
    f_s, g_s = problem.value_and_grad(torch.as_tensor(sk))
    rel = float(((f_b - f_s) / f_s).abs().max())
    n = len(spec)
    print(f"batched : wall {t_batched:7.3f} s, cpu {c_batched:7.3f} s ({1e3 * c_batched / n:.3f} ms/model; median of "
          f"{len(runs)} runs, the first: wall {t_first:.3f} s, cpu {c_first:.3f} s; {info.iterations} iterations, "
          f"{info.mean_iterations:.1f} per model, {100 * info.converged:.1f} % converged)")
    print(f"sklearn : wall {t_sklearn:7.3f} s, cpu {c_sklearn:7.3f} s ({1e3 * c_sklearn / n:.3f} ms/model)")
    g_bmax, g_smax = float(g_b.abs().amax(1).max()), float(g_s.abs().amax(1).max())
    print(f"objective: mean batched {float(f_b.mean()):.7f}, sklearn {float(f_s.mean()):.7f}; max relative "
          f"difference {rel:.2e}, max absolute {float((f_b - f_s).abs().max()):.1e} (batched lower on "
          f"{100 * float((f_b < f_s).float().mean()):.0f} % of models); largest max|grad| batched {g_bmax:.1e}, "
          f"sklearn {g_smax:.1e}")
    print(f"mean balanced test accuracy: batched {acc_b.mean():.4f}, sklearn {acc_s.mean():.4f}; max |difference| "
          f"per model {np.abs(acc_b - acc_s).max():.4f}; test predictions agreeing {100 * agree:.2f} %")
    print(f"speed-up: {t_sklearn / t_batched:.1f}x wall, {c_sklearn / c_batched:.1f}x cpu "
          f"(first batched run alone: {t_sklearn / t_first:.1f}x wall, {c_sklearn / c_first:.1f}x cpu)")
    print(f"target >= {TARGET_X:g}x (paper's bank, the main job's features): "
          f"{'met' if t_sklearn / t_batched >= TARGET_X else 'missed'}"
          f"{'' if real else ' [synthetic features: run the main job first, or make bench, for the real figure]'}")


if __name__ == "__main__":
    main()
