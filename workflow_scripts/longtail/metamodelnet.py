"""MetaModelNet (Wang, Ramanan & Hebert, "Learning to Model the Tail", NIPS 2017): pure tensor code.

Three pieces, each usable on its own (the method in ``methods/metamodelnet.py`` wires them):

1. **Base learner and few-shot bank.** g(x; theta) is the last fc layer over frozen features; one
   class's parameters theta = (w, b) in R^(D+1) act on standardised features z = (x - mean) / scale
   (folded back into raw-feature weights by :func:`fold_standardisation`). A class's model with a
   set of k positives is a *one-vs-rest logistic regression*: its k positives against a shared,
   class-balanced pool of negatives (up to ``negatives_per_class`` training images of every other
   class), each side weighted to total 1/2, with an L2 penalty on w (bias unpenalised)::

       J(theta) = sum_pos 1/(2k) softplus(-theta.z) + sum_neg 1/(2 n_neg) softplus(theta.z) + l2/2 |w|^2

   which is exactly scikit-learn's ``LogisticRegression(C=1/l2)`` with those ``sample_weight``s
   (the benchmark fits the same models with it). The whole bank -- every class x k x subset, the
   many-shot models theta* (all of a class's images) included -- is ONE parameter tensor (P, D+1)
   minimised by :func:`fit_one_vs_rest`: L-BFGS run independently per row (per-model curvature
   pairs, step sizes and stopping), batched so every iteration is two (M, D+1) x (D+1, P) matmuls
   and a scatter-add for the positives; on the GPU when the tensors live there.
2. **MetaModelNet F** (Eq. 2, Fig. 2): a chain of N+1 residual blocks, block i = BN -> leaky ReLU
   -> FC with a skip, F_i(theta) = F_{i+1}(theta + f(theta; w_i)); a k-shot model enters at block
   floor(log2 k) (:func:`entry_block`). Every block's last FC starts at zero, so an untrained chain
   is exactly the identity. ``model_regression`` ([21]) is one plain (non-residual) MLP instead.
3. **Recursive training** (Sec. 2, "Training"): :func:`stage_plan` lists the stages, block N first
   down to block 0; stage i trains block i and fine-tunes blocks i+1..N on every bank model with
   k >= 2^i, with Eq. 1's loss |F(theta) - theta*|^2 + lambda * CE of g with the predicted row on
   head-split data (:func:`train_metanet`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# Base learner: standardised features with a bias column, folding back into a raw-feature Linear
# --------------------------------------------------------------------------------------------------


def standardiser(x: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), scale (D,)) of the training features; eps keeps dead ReLU units finite."""
    return x.mean(0), x.std(0, unbiased=False) + eps


def augment(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N, D) raw features -> (N, D+1) standardised features with a trailing 1 (the bias input)."""
    z = (x - mean) / scale
    return torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype, device=z.device)], 1)


def fold_standardisation(theta: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """theta (C, D+1) on standardised features -> (weight (C, D), bias (C,)) on raw features:
    w.((x - m)/s) + b = (w/s).x + (b - sum w m / s)."""
    w, b = theta[:, :-1], theta[:, -1]
    return w / scale, b - (w * mean / scale).sum(1)


# --------------------------------------------------------------------------------------------------
# The few-shot bank
# --------------------------------------------------------------------------------------------------


def negative_pool(labels: np.ndarray, per_class: int, rng: np.random.Generator, max_total: int | None = None
                  ) -> np.ndarray:
    """Indices of a class-balanced negative pool: up to ``per_class`` images of every class
    (all of a smaller class), optionally capped at ``max_total`` (per class lowered evenly)."""
    classes = np.unique(labels[labels >= 0])
    if max_total is not None and len(classes):
        per_class = max(1, min(per_class, max_total // len(classes)))
    parts = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        parts.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


@dataclass
class BankSpec:
    """Which models the bank holds: model p is class ``model_class[p]`` fitted on the
    ``model_k[p]`` training rows ``pos_index[pos_model == p]`` (its positives)."""

    model_class: np.ndarray  # (P,) int64
    model_k: np.ndarray  # (P,) int64, the subset size
    pos_index: np.ndarray  # (T,) int64 rows of the training features, T = sum(model_k)
    pos_model: np.ndarray  # (T,) int64 model of each positive

    def __len__(self) -> int:
        return len(self.model_class)

    @staticmethod
    def concat(specs: Sequence["BankSpec"]) -> "BankSpec":
        offs = np.cumsum([0] + [len(s) for s in specs[:-1]])
        return BankSpec(np.concatenate([s.model_class for s in specs]), np.concatenate([s.model_k for s in specs]),
                        np.concatenate([s.pos_index for s in specs]),
                        np.concatenate([s.pos_model + o for s, o in zip(specs, offs)]))


def draw_subsets(labels: np.ndarray, requests: Iterable[tuple[int, int, int]], rng: np.random.Generator
                 ) -> BankSpec:
    """One model per (class, k) subset: ``requests`` = (class, k, S) triples, each giving S random
    k-subsets (without replacement inside a subset) of the class's training rows.
    k >= the class size gives S copies of the full set (use S=1 for a class's all-data model)."""
    mc, mk, pi, pm = [], [], [], []
    p = 0
    for c, k, s in requests:
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise ValueError(f"class {c} has no training rows")
        k = min(int(k), len(idx))
        for _ in range(int(s)):
            pi.append(rng.choice(idx, k, replace=False) if k < len(idx) else idx)
            pm.append(np.full(k, p))
            mc.append(c)
            mk.append(k)
            p += 1
    if not mc:
        return BankSpec(*(np.zeros(0, np.int64) for _ in range(4)))
    return BankSpec(np.asarray(mc, np.int64), np.asarray(mk, np.int64), np.concatenate(pi).astype(np.int64),
                    np.concatenate(pm).astype(np.int64))


@dataclass
class FitInfo:
    """How the batched solver ended: iterations, function evaluations (one per iteration plus the
    start), the fraction of models whose max |gradient| fell below ``tol``, the worst one left."""

    iterations: int
    evaluations: int
    converged: float
    max_grad: float
    seconds: float


class OneVsRestProblem:
    """The batched objective J_p(theta_p) of every bank model p (see the module docstring).

    z: (N, D+1) standardised training features with bias column; labels (N,); negatives: row
    indices of the shared pool. Per-model weights are built once: (M, P) for the pool (zero on the
    model's own class) and (T,) for the positives."""

    def __init__(self, z: torch.Tensor, labels: torch.Tensor, negatives: np.ndarray, spec: BankSpec,
                 l2: float) -> None:
        dev = z.device
        self.P, self.d = len(spec), z.shape[1]
        neg = torch.as_tensor(negatives, device=dev)
        self.neg_x = z[neg]  # (M, d)
        mc = torch.as_tensor(spec.model_class, device=dev)
        mask = (labels[neg][:, None] != mc[None, :]).to(z.dtype)  # (M, P)
        n_neg = mask.sum(0)
        if bool((n_neg == 0).any()):
            raise ValueError("a model's class has no negatives in the pool (one class only?)")
        self.neg_w = mask / (2 * n_neg)  # each side totals 1/2
        # positives grouped by class: model p's positives are rows of its class c, so all models of
        # c score all rows of c in one matmul (n_c, d) x (d, P_c); the (n_c, P_c) weight matrix is
        # 1/(2k) at the model's k positives and 0 elsewhere (sparse entries gathered by index)
        self.groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for c in np.unique(spec.model_class):
            models = np.flatnonzero(spec.model_class == c)
            rows = np.unique(spec.pos_index[np.isin(spec.pos_model, models)])
            local_row = np.searchsorted(rows, spec.pos_index)
            local_model = np.full(len(spec), -1)
            local_model[models] = np.arange(len(models))
            sel = np.isin(spec.pos_model, models)
            flat = local_row[sel] * len(models) + local_model[spec.pos_model[sel]]  # into (n_c, P_c)
            w = 1.0 / (2.0 * spec.model_k[spec.pos_model[sel]])
            self.groups.append((torch.as_tensor(models, device=dev), z[torch.as_tensor(rows, device=dev)],
                                torch.as_tensor(flat, device=dev), torch.as_tensor(w, dtype=z.dtype, device=dev)))
        self.reg = torch.full((self.d,), float(l2), dtype=z.dtype, device=dev)
        self.reg[-1] = 0.0  # the bias is not penalised (as scikit-learn's lbfgs)

    def value_and_grad(self, theta: torch.Tensor, value: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """theta (P, d) -> (J (P,) or None when ``value`` is False, dJ/dtheta (P, d)), analytic.

        The solver only needs gradients; skipping J saves the softplus pass over the (M, P)
        pool scores (transcendentals dominate on CPUs without vectorised exp/log)."""
        s_neg = self.neg_x @ theta.T  # (M, P)
        g = (self.neg_w * torch.sigmoid(s_neg)).T @ self.neg_x  # (P, d)
        f = (self.neg_w * F.softplus(s_neg)).sum(0) if value else None
        for models, x, flat, w in self.groups:  # x (n_c, d): the rows of class c
            th = theta.index_select(0, models)  # (P_c, d)
            s_pos = (x @ th.T).view(-1)[flat]  # (T_c,) scores of each model's own positives
            coef = torch.zeros(x.shape[0] * len(models), dtype=x.dtype, device=x.device)
            coef[flat] = -w * torch.sigmoid(-s_pos)
            g = g.index_add(0, models, coef.view(x.shape[0], len(models)).T @ x)
            if value:
                f = f.index_add(0, models, torch.zeros(len(models), dtype=x.dtype, device=x.device).index_add(
                    0, flat % len(models), w * F.softplus(-s_pos)))
        if value:
            f = f + 0.5 * (theta * theta * self.reg).sum(1)
        return f, g + theta * self.reg


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1)


def fit_one_vs_rest(problem: OneVsRestProblem, max_iter: int = 100, tol: float = 1e-4, history: int = 5,
                    theta0: torch.Tensor | None = None) -> tuple[torch.Tensor, FitInfo]:
    """Minimise every J_p at once: per-row L-BFGS (two-loop recursion with per-row dot products),
    one batched function evaluation per iteration.

    Step rule: a row tries step t along its L-BFGS direction; it accepts when Armijo's condition
    holds (the decrease estimated from the two end-point slopes, so no function values are
    computed), else it keeps its iterate and retries next iteration with t/4.
    A row stops when max |gradient| < ``tol`` (scikit-learn's lbfgs criterion) or when its step
    underflows. Returns (theta (P, d), FitInfo)."""
    t_start = time.perf_counter()
    P, d = problem.P, problem.d
    dev = problem.neg_x.device
    theta = torch.zeros(P, d, device=dev) if theta0 is None else theta0.clone()
    _, g = problem.value_and_grad(theta, value=False)
    evals = 1
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    R: list[torch.Tensor] = []
    gnorm = g.abs().amax(1)
    step = torch.clamp(1.0 / g.norm(dim=1).clamp_min(1e-12), max=1.0)  # first step: |t g| <= 1
    done = gnorm < tol
    it = 0
    for it in range(1, max_iter + 1):
        if bool(done.all()):
            it -= 1
            break
        q = g.clone()
        alphas = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(R)):
            a = r * _dot(s, q)
            alphas.append(a)
            q -= a[:, None] * y
        if S:
            yy = _dot(Y[-1], Y[-1])
            gamma = torch.where(yy > 0, _dot(S[-1], Y[-1]) / yy.clamp_min(1e-30), torch.ones_like(yy))
            q *= gamma[:, None]
        for (s, y, r), a in zip(zip(S, Y, R), reversed(alphas)):
            b = r * _dot(y, q)
            q += (a - b)[:, None] * s
        direction = -q
        slope = _dot(g, direction)
        bad = slope >= 0  # not a descent direction (stale curvature): fall back to -g
        if bool(bad.any()):
            direction[bad] = -g[bad]
            slope = torch.where(bad, -_dot(g, g), slope)
        direction[done] = 0.0
        trial = theta + step[:, None] * direction
        _, g_new = problem.value_and_grad(trial, value=False)
        evals += 1
        # Armijo's sufficient decrease f(trial) <= f + c1 t slope, with the change in f estimated
        # by the trapezoid rule along the segment, t (slope + slope_new) / 2 (exact for a quadratic;
        # J is convex and smooth): needs only the gradient at the trial point
        slope_new = _dot(g_new, direction)
        ok = (slope_new <= -(1 - 2e-4) * slope) & ~done & torch.isfinite(slope_new)
        s_vec = torch.where(ok[:, None], trial - theta, torch.zeros_like(theta))
        y_vec = torch.where(ok[:, None], g_new - g, torch.zeros_like(g))
        sy = _dot(s_vec, y_vec)
        keep = sy > 1e-10
        S.append(torch.where(keep[:, None], s_vec, torch.zeros_like(s_vec)))
        Y.append(torch.where(keep[:, None], y_vec, torch.zeros_like(y_vec)))
        R.append(torch.where(keep, 1.0 / sy.clamp_min(1e-10), torch.zeros_like(sy)))
        if len(S) > history:
            S.pop(0), Y.pop(0), R.pop(0)
        theta = torch.where(ok[:, None], trial, theta)
        g = torch.where(ok[:, None], g_new, g)
        step = torch.where(ok, torch.ones_like(step), step * 0.25)
        gnorm = g.abs().amax(1)
        done = done | (gnorm < tol) | (step < 1e-8)
    conv = float((gnorm < tol).float().mean()) if P else 1.0
    info = FitInfo(it, evals, conv, float(gnorm.max()) if P else 0.0, time.perf_counter() - t_start)
    return theta, info


def fit_bank(z: torch.Tensor, labels: torch.Tensor, negatives: np.ndarray, spec: BankSpec, l2: float,
             max_iter: int = 100, tol: float = 1e-4, history: int = 5, chunk: int = 16384
             ) -> tuple[torch.Tensor, FitInfo]:
    """Fit every model of ``spec`` (rows of the result, (P, D+1)), ``chunk`` models per batched
    solve to bound memory ((M, chunk) pool scores)."""
    if len(spec) == 0:
        return torch.zeros(0, z.shape[1], device=z.device), FitInfo(0, 0, 1.0, 0.0, 0.0)
    out, infos = [], []
    for lo in range(0, len(spec), chunk):
        sel = np.arange(lo, min(lo + chunk, len(spec)))
        keep = np.isin(spec.pos_model, sel)
        sub = BankSpec(spec.model_class[sel], spec.model_k[sel], spec.pos_index[keep], spec.pos_model[keep] - lo)
        theta, info = fit_one_vs_rest(OneVsRestProblem(z, labels, negatives, sub, l2), max_iter, tol, history)
        out.append(theta)
        infos.append(info)
    total = FitInfo(max(i.iterations for i in infos), sum(i.evaluations for i in infos),
                    float(np.average([i.converged for i in infos], weights=[min(chunk, len(spec))] * len(infos))),
                    max(i.max_grad for i in infos), sum(i.seconds for i in infos))
    return torch.cat(out), total


# --------------------------------------------------------------------------------------------------
# MetaModelNet: residual chain (Eq. 2) and the model-regression baseline [21]
# --------------------------------------------------------------------------------------------------


def entry_block(n: int | np.ndarray | torch.Tensor, num_blocks: int):
    """Block a model trained on n images enters at: floor(log2 n), clipped to 0..num_blocks-1
    (n >= 2^N enters the last block N; n = 0 is treated as 1)."""
    if isinstance(n, torch.Tensor):
        return torch.floor(torch.log2(n.clamp_min(1).double())).long().clamp(0, num_blocks - 1)
    arr = np.floor(np.log2(np.maximum(np.asarray(n, dtype=np.float64), 1))).astype(np.int64)
    arr = np.clip(arr, 0, num_blocks - 1)
    return int(arr) if np.ndim(n) == 0 else arr


class _BNAct(nn.Module):
    """BN -> leaky ReLU pre-activation (Fig. 2b). A group of one model in training mode falls back
    to the running statistics (batch statistics of one row are undefined)."""

    def __init__(self, dim: int, slope: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) < 2:
            x = F.batch_norm(x, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, False)
        else:
            x = self.bn(x)
        return F.leaky_relu(x, self.slope)


class ResidualBlock(nn.Module):
    """f(theta; w_i): ``depth`` units of BN -> leaky ReLU -> FC (d -> hidden -> ... -> d); the
    last FC is zero-initialised, so f = 0 and the block is the identity until trained."""

    def __init__(self, dim: int, hidden: int, depth: int = 1, slope: float = 0.1, zero_init: bool = True) -> None:
        super().__init__()
        sizes = [dim] + [hidden] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [_BNAct(a, slope), nn.Linear(a, b)]
        self.f = nn.Sequential(*layers)
        if zero_init:
            nn.init.zeros_(self.f[-1].weight)
            nn.init.zeros_(self.f[-1].bias)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta + self.f(theta)


class ResidualChain(nn.Module):
    """MetaModelNet (Fig. 2a): blocks 0..N; F_i(theta) = F_{i+1}(theta + f(theta; w_i)), F_{N+1} = I.
    ``forward(theta, entry)`` runs each row from its entry block to the end."""

    residual = True

    def __init__(self, dim: int, num_blocks: int, hidden: int | None = None, depth: int = 1, slope: float = 0.1,
                 zero_init: bool = True) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.blocks = nn.ModuleList(ResidualBlock(dim, hidden or dim, depth, slope, zero_init)
                                    for _ in range(num_blocks))

    def forward(self, theta: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
        return self.trajectory(theta, entry)[-1]

    def trajectory(self, theta: torch.Tensor, entry: torch.Tensor) -> list[torch.Tensor]:
        """[theta, after block 0, ..., after block N] (each (B, d)); a row is unchanged by the
        blocks before its entry block (so after block j it is the k(j+1)-shot prediction)."""
        h, out = theta, [theta]
        for j, block in enumerate(self.blocks):
            active = torch.nonzero(entry <= j).squeeze(1)
            if len(active):
                h = h.index_copy(0, active, block(h.index_select(0, active)))
            out.append(h)
        return out


class Regressor(nn.Module):
    """Model regression [21] (Table 2's baseline): one plain MLP theta -> theta* shared by every
    k (no entry blocks, no skip connection): ``depth`` units of BN -> leaky ReLU -> FC."""

    residual = False

    def __init__(self, dim: int, hidden: int | None = None, depth: int = 2, slope: float = 0.1) -> None:
        super().__init__()
        sizes = [dim] + [hidden or dim] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [_BNAct(a, slope), nn.Linear(a, b)]
        self.f = nn.Sequential(*layers)
        self.num_blocks = 1
        self.blocks = nn.ModuleList([self.f])

    def forward(self, theta: torch.Tensor, entry: torch.Tensor | None = None) -> torch.Tensor:
        return self.f(theta)

    def trajectory(self, theta: torch.Tensor, entry: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [theta, self.f(theta)]


# --------------------------------------------------------------------------------------------------
# Recursive training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One training stage: ``block`` is trained (None = the whole regressor), ``trainable`` are
    the blocks updated (block + the later ones it fine-tunes), ``min_k`` the smallest k whose bank
    models are used (all k >= min_k: multi-task), ``threshold`` the head split H_t of its task
    loss (classes with more than t training images)."""

    block: int | None
    trainable: tuple[int, ...]
    min_k: int
    threshold: int


def stage_plan(num_blocks: int, split: str, head_threshold: int | None = None) -> list[Stage]:
    """The training schedule. ``recur``: for i = N..0, block i on H_t with t = 2^(i+1), k = 2^i,
    fine-tuning i+1..N on all k >= 2^i. ``fix``: the same order with one split H_head_threshold.
    ``regression``: one stage, the single regressor on all k and H_head_threshold."""
    n = num_blocks - 1
    t_fix = head_threshold if head_threshold is not None else 2 ** num_blocks
    if split == "regression":
        return [Stage(None, (0,), 1, t_fix)]
    if split not in ("recur", "fix"):
        raise ValueError(f"split '{split}' is unknown; choose recur, fix or regression")
    return [Stage(i, tuple(range(i, n + 1)), 2 ** i, 2 ** (i + 1) if split == "recur" else t_fix)
            for i in range(n, -1, -1)]


def bank_requests(counts: Sequence[int], num_blocks: int, subsets: Sequence[int], split: str,
                  head_threshold: int | None = None) -> list[tuple[int, int, int]]:
    """(class, k, S) of the bank. recur: k = 2^i from the classes of H_{2k} (n > 2k), the split
    its block trains on; fix / regression: every k = 2^i < n of the classes of H_head_threshold."""
    t_fix = head_threshold if head_threshold is not None else 2 ** num_blocks
    out = []
    for i in range(num_blocks):
        k = 2 ** i
        for c, n in enumerate(counts):
            head = n > 2 * k if split == "recur" else (n > t_fix and n > k)
            if head:
                out.append((c, k, int(subsets[min(i, len(subsets) - 1)])))
    return out


@dataclass
class TrainData:
    """Everything the meta-network trains on (all tensors on one device)."""

    theta: torch.Tensor  # (P, d) bank models
    model_class: torch.Tensor  # (P,)
    model_k: torch.Tensor  # (P,)
    theta_star: torch.Tensor  # (C, d) many-shot targets (all-data models)
    counts: torch.Tensor  # (C,) training images per class
    task_z: torch.Tensor  # (n, d) task-loss features (standardised, bias column)
    task_y: torch.Tensor  # (n,)


def task_loss(theta_hat: torch.Tensor, cls: torch.Tensor, theta_star: torch.Tensor, head: torch.Tensor,
              z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 1's performance term per model: multi-class CE of g on the head-split data (z, y) when
    the predicted row theta_hat_p replaces its class's row among the head classes' theta*.

    theta_hat (B, d), cls (B,) in head; theta_star (C, d); head: (C,) bool; z (n, d), y (n,) all in
    head. Returns (B,) mean CE over the n samples."""
    hidx = torch.nonzero(head).squeeze(1)  # head classes, in label order
    col = torch.full((len(head),), -1, dtype=torch.long, device=z.device)
    col[hidx] = torch.arange(len(hidx), device=z.device)
    base = z @ theta_star[hidx].T  # (n, H) logits with every row at theta*
    own = z @ theta_hat.T  # (n, B) the predicted row's logits
    c_col = col[cls]  # (B,)
    # logsumexp over the head rows except the model's own class, then add its predicted logit
    masked = base[:, None, :].expand(-1, len(cls), -1).clone()  # (n, B, H)
    masked.scatter_(2, c_col[None, :, None].expand(len(z), -1, 1), float("-inf"))
    lse = torch.logaddexp(torch.logsumexp(masked, 2), own)  # (n, B)
    y_col = col[y]  # (n,)
    target = torch.where(y_col[:, None] == c_col[None, :], own, base.gather(1, y_col[:, None]).expand(-1, len(cls)))
    return (lse - target).mean(0)


@dataclass
class MetaTrainConfig:
    steps: int = 150  # optimiser steps per stage
    batch: int = 256  # bank models per step
    lr: float = 1e-3
    finetune_lr_scale: float = 1.0  # lr factor of the later blocks a stage fine-tunes
    weight_decay: float = 1e-4
    task_weight: float = 1.0  # lambda of Eq. 1
    log_every: int = 10


def train_metanet(net: nn.Module, data: TrainData, plan: Sequence[Stage], cfg: MetaTrainConfig,
                  generator: torch.Generator | None = None) -> list[dict]:
    """Train ``net`` stage by stage (``plan`` order: N..0 for the chain). At each stage the bank
    rows with k >= min_k (each from its own head split, see :func:`bank_requests`) enter at block
    log2 k; each step draws ``batch`` of them, the loss is mean |F(theta) - theta*|^2 + lambda * CE
    (CE on the stage's head split H_t, models of classes outside it get regression only). Returns
    history rows {stage, block, step, loss, regression, task, models}."""
    dev = data.theta.device
    rows: list[dict] = []
    num_blocks = net.num_blocks
    for si, st in enumerate(plan):
        use = data.model_k >= st.min_k
        if st.block is not None and getattr(net, "residual", True):
            # models of k enter at block log2 k; only blocks >= st.block are run and trained
            use &= entry_block(data.model_k, num_blocks) >= st.block
        idx = torch.nonzero(use).squeeze(1)
        head = data.counts > st.threshold
        task_keep = head[data.task_y]
        z_t, y_t = data.task_z[task_keep], data.task_y[task_keep]
        # a model's own class must be a head class of the task loss; else only regression applies
        if len(idx) == 0:
            rows.append({"stage": si, "block": -1 if st.block is None else st.block, "step": 0, "loss": math.nan,
                         "regression": math.nan, "task": math.nan, "models": 0})
            continue
        groups = []
        for b in st.trainable:
            params = list(net.blocks[b].parameters())
            scale = 1.0 if (st.block is None or b == st.block) else cfg.finetune_lr_scale
            groups.append({"params": params, "lr": cfg.lr * scale})
        opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        net.train()
        for step in range(cfg.steps):
            pick = idx[torch.randint(len(idx), (min(cfg.batch, len(idx)),), generator=generator,
                                     device="cpu").to(dev)]
            theta, cls = data.theta[pick], data.model_class[pick]
            entry = entry_block(data.model_k[pick], num_blocks)
            pred = net(theta, entry)
            reg = ((pred - data.theta_star[cls]) ** 2).sum(1)  # (B,)
            in_head = head[cls]
            task = torch.zeros_like(reg)
            if cfg.task_weight > 0 and bool(in_head.any()) and int(head.sum()) >= 2:
                task[in_head] = task_loss(pred[in_head], cls[in_head], data.theta_star, head, z_t, y_t)
            loss = (reg + cfg.task_weight * task).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                rows.append({"stage": si, "block": -1 if st.block is None else st.block, "step": step,
                             "loss": float(loss.detach()), "regression": float(reg.detach().mean()),
                             "task": float(task.detach().mean()),
                             "models": len(idx)})
    net.eval()
    return rows


@torch.no_grad()
def transform(net: nn.Module, theta: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Predicted many-shot models: each row (a class's model from its n images) enters at block
    floor(log2 n) (the regressor ignores n). Eval mode (BN running statistics)."""
    net.eval()
    return net(theta, entry_block(n, net.num_blocks))
