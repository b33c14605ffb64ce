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
   minimised by :func:`fit_bank`: every class's "union" model (all its bank positives) is solved
   first by exact Newton (:func:`newton`), every bank model starts from its class's one, and
   L-BFGS (:func:`fit_one_vs_rest`) runs independently per row (per-model curvature pairs, step
   sizes and stopping) with the inverse Hessian of the class's union model as its initial
   matrix (a per-class preconditioner: LeNet features are ill-conditioned). Every iteration is
   two (P, D+1) x (D+1, M) matmuls for the shared negative pool plus batched products over each
   model's own positives; converged rows leave the batch and the last few stragglers finish with
   Newton steps. On the GPU when the tensors live there.
2. **MetaModelNet F** (Eq. 2, Fig. 2): a chain of N+1 residual blocks, block i = BN -> leaky ReLU
   -> FC with a skip, F_i(theta) = F_{i+1}(theta + f(theta; w_i)); a k-shot model enters at block
   floor(log2 k) (:func:`entry_block`). Every block's last FC starts at zero, so an untrained chain
   is exactly the identity. Model regression ([21], ``split: regression``) is one plain (non-residual) MLP instead.
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
    """How the batched solver ended: iterations (of the slowest model), batched gradient
    evaluations, the fraction of models whose max |gradient| fell below ``tol``, the worst one
    left, wall seconds, and the mean iterations per model (the work done, since converged models
    leave the batch)."""

    iterations: int
    evaluations: int
    converged: float
    max_grad: float
    seconds: float
    mean_iterations: float = 0.0


def _pow2(k: np.ndarray) -> np.ndarray:
    return (2 ** np.ceil(np.log2(np.maximum(k, 1)))).astype(np.int64)


class OneVsRestProblem:
    """The batched objective J_p(theta_p) of every bank model p (see the module docstring).

    z: (N, D+1) standardised training features with bias column; labels (N,); negatives: row
    indices of the shared pool. Layout, built once:

    * pool: ``neg_x`` (M, d) shared by every model and ``neg_wt`` (P, M) per-model weights
      1/(2 n_neg) (zero on the model's own class): the pool's part of all P gradients is two
      (P, d) x (d, M) matmuls;
    * positives: models bucketed by k rounded up to a power of two; a bucket holds ``x`` (P_b, K, d)
      (each model's own positives, zero-padded) and ``w`` (P_b, K) = 1/(2k) (0 on padding), so its
      scores and gradients are two batched matrix-vector products (no per-positive scatter)."""

    def __init__(self, z: torch.Tensor, labels: torch.Tensor, negatives: np.ndarray, spec: BankSpec,
                 l2: float) -> None:
        dev = z.device
        self.P, self.d = len(spec), z.shape[1]
        self.l2 = float(l2)
        neg = torch.as_tensor(np.asarray(negatives, dtype=np.int64), device=dev)
        self.neg_x = z[neg].contiguous()  # (M, d)
        mc = torch.as_tensor(spec.model_class, device=dev)
        self.model_class = mc
        mask = (mc[:, None] != labels[neg][None, :]).to(z.dtype)  # (P, M)
        n_neg = mask.sum(1, keepdim=True)
        if bool((n_neg == 0).any()):
            raise ValueError("a model's class has no negatives in the pool (one class only?)")
        self.neg_wt = mask / (2 * n_neg)  # each side totals 1/2
        order = np.argsort(spec.pos_model, kind="stable")
        pm, pi = spec.pos_model[order], spec.pos_index[order]
        starts = np.r_[0, np.cumsum(np.bincount(pm, minlength=self.P))[:-1]] if self.P else np.zeros(0, np.int64)
        kk = np.bincount(pm, minlength=self.P)
        if bool((kk == 0).any()):
            raise ValueError("every bank model needs at least one positive")
        size = _pow2(kk)
        # (models (P_b,), x (P_b, K, d), x transposed (P_b, d, K) or None for K < 4, w (P_b, K))
        self.buckets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        for K in np.unique(size):
            models = np.flatnonzero(size == K)
            slot = np.arange(K)[None, :]
            valid = slot < kk[models][:, None]  # (P_b, K)
            rows = np.where(valid, pi[np.minimum(starts[models][:, None] + slot, len(pi) - 1)], 0)
            x = z[torch.as_tensor(rows, device=dev)] * torch.as_tensor(valid, device=dev)[..., None].to(z.dtype)
            w = torch.as_tensor(np.where(valid, 0.5 / kk[models][:, None], 0.0), dtype=z.dtype, device=dev)
            # scores: (1, d) x (d, K) products on the transposed copy beat (K, d) x (d, 1) ones
            xt = x.transpose(1, 2).contiguous() if K >= 4 else None
            self.buckets.append((torch.as_tensor(models, device=dev), x, xt, w))
        self.reg = torch.full((self.d,), self.l2, dtype=z.dtype, device=dev)
        self.reg[-1] = 0.0  # the bias is not penalised (as scikit-learn's lbfgs)

    def hessian_cost(self) -> int:
        """Multiply-adds of one :meth:`hessian` row at most: (M + largest K) d^2."""
        return (self.neg_x.shape[0] + max((x.shape[1] for _, x, _, _ in self.buckets), default=0)) * self.d ** 2

    def subset(self, keep: torch.Tensor) -> "OneVsRestProblem":
        """The problem of the models ``keep`` ((P',) indices), in that order; shares the pool."""
        new = object.__new__(OneVsRestProblem)
        new.P, new.d, new.l2, new.reg, new.neg_x = len(keep), self.d, self.l2, self.reg, self.neg_x
        new.model_class = self.model_class.index_select(0, keep)
        new.neg_wt = self.neg_wt.index_select(0, keep)
        pos = torch.full((self.P,), -1, dtype=torch.long, device=keep.device)
        pos[keep] = torch.arange(len(keep), device=keep.device)
        new.buckets = []
        for models, x, xt, w in self.buckets:
            sel = torch.nonzero(pos[models] >= 0).squeeze(1)
            if len(sel):
                new.buckets.append((pos[models[sel]], x.index_select(0, sel),
                                    None if xt is None else xt.index_select(0, sel), w.index_select(0, sel)))
        return new

    def value_and_grad(self, theta: torch.Tensor, value: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """theta (P, d) -> (J (P,) or None when ``value`` is False, dJ/dtheta (P, d)), analytic.

        The solver only needs gradients; skipping J saves the softplus passes."""
        s_neg = theta @ self.neg_x.T  # (P, M)
        g = (self.neg_wt * torch.sigmoid(s_neg)) @ self.neg_x  # (P, d)
        f = (self.neg_wt * F.softplus(s_neg)).sum(1) if value else None
        for models, x, xt, w in self.buckets:  # x (P_b, K, d)
            th = theta.index_select(0, models)
            # (P_b, K) scores of each model's own positives
            s_pos = (x * th[:, None, :]).sum(2) if xt is None else torch.bmm(th[:, None, :], xt).squeeze(1)
            coef = -w * torch.sigmoid(-s_pos)
            g.index_add_(0, models, torch.bmm(coef[:, None, :], x).squeeze(1) if x.shape[1] >= 4
                         else (x * coef[:, :, None]).sum(1))
            if value:
                f.index_add_(0, models, (w * F.softplus(-s_pos)).sum(1))
        if value:
            f = f + 0.5 * (theta * theta * self.reg).sum(1)
        return f, g + theta * self.reg

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """(P, d, d) exact Hessians sum_i w_i s_i (1 - s_i) z_i z_i^T + diag(l2, .., l2, 0): P d^2
        (M + k) work, so used only for the few per-class warm-start models."""
        sg = torch.sigmoid(theta @ self.neg_x.T)
        a = self.neg_wt * sg * (1 - sg)  # (P, M)
        h = torch.matmul(self.neg_x.T[None] * a[:, None, :], self.neg_x)  # (P, d, d)
        for models, x, _, w in self.buckets:
            sp = torch.sigmoid((x * theta.index_select(0, models)[:, None, :]).sum(2))
            c = w * sp * (1 - sp)  # (P_b, K)
            h.index_add_(0, models, torch.bmm(x.transpose(1, 2) * c[:, None, :], x))
        return h + torch.diag(self.reg)


def union_spec(spec: BankSpec, max_rows: int | None = None) -> BankSpec:
    """One model per class of ``spec``: the union of the positives of all its models (the class's
    'average' problem; the solver warm-starts from it and takes its Hessian as preconditioner),
    thinned to ``max_rows`` evenly spaced rows when larger (it only needs to be representative)."""
    classes = np.unique(spec.model_class)
    cls_of_pos = spec.model_class[spec.pos_model]
    rows = [np.unique(spec.pos_index[cls_of_pos == c]) for c in classes]
    if max_rows is not None:
        rows = [r if len(r) <= max_rows else r[np.linspace(0, len(r) - 1, max_rows).round().astype(np.int64)]
                for r in rows]
    return BankSpec(classes.astype(np.int64), np.array([len(r) for r in rows], np.int64),
                    np.concatenate(rows).astype(np.int64),
                    np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)]).astype(np.int64))


def newton(problem: OneVsRestProblem, steps: int, theta0: torch.Tensor | None = None, tol: float = 0.0
           ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to ``steps`` damped Newton steps on every row (exact (d, d) Hessians, Cholesky solves; a
    row whose J rose halves its step, up to 8 times), stopping once every row has max |gradient|
    < ``tol``. Costs P d^2 (M + k) per step, so it runs only on few rows: the per-class warm
    starts and the last stragglers of :func:`fit_one_vs_rest`. Returns (theta, max |g| (P,), steps)."""
    x = problem.neg_x
    theta = torch.zeros(problem.P, problem.d, dtype=x.dtype, device=x.device) if theta0 is None else theta0.clone()
    f, g = problem.value_and_grad(theta)
    gmax = g.abs().amax(1)
    done_steps = 0
    for _ in range(steps):
        if bool((gmax < tol).all()):
            break
        done_steps += 1
        L, bad = torch.linalg.cholesky_ex(problem.hessian(theta))
        if bool(bad.any()):
            break
        direction = -torch.cholesky_solve(g[:, :, None], L).squeeze(2)
        direction[gmax < tol] = 0.0
        t = torch.ones(problem.P, device=theta.device)
        for _ in range(8):
            trial = theta + t[:, None] * direction
            f_new, g_new = problem.value_and_grad(trial)
            gmax_new = g_new.abs().amax(1)
            # f_new may exceed f by float32 rounding near the optimum: allow that slack
            ok = (f_new <= f + 1e-6 * f.abs()) | (gmax_new < tol)
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        theta = torch.where(ok[:, None], trial, theta)
        f, g, gmax = torch.where(ok, f_new, f), torch.where(ok[:, None], g_new, g), torch.where(ok, gmax_new, gmax)
    return theta, gmax, done_steps


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(a, b)  # row-wise dot products (P,)


def fit_one_vs_rest(problem: OneVsRestProblem, max_iter: int = 100, tol: float = 1e-4, history: int = 5,
                    theta0: torch.Tensor | None = None, compact: float = 0.6, newton_tail: int = 0,
                    h0: torch.Tensor | None = None, scale_h0: bool = True, step_growth: float = 4.0,
                    newton_budget: float = 5e8) -> tuple[torch.Tensor, FitInfo]:
    """Minimise every J_p at once: per-row L-BFGS (two-loop recursion with per-row dot products
    and per-row scaling s.y / y.y), one batched gradient evaluation per iteration.

    Step rule: a row tries step t along its direction; it accepts when Armijo's condition holds
    (the decrease estimated from the two end-point slopes, so no function values are computed) or
    when the trial already meets the stopping test, else it keeps its iterate and retries next
    iteration with the step the two slopes' secant suggests (clamped to [t/10, t/2]); after an
    accepted step the next one is min(1, ``step_growth`` t), so a row whose initial matrix
    overshoots keeps a shorter step instead of failing every other iteration. Curvature
    pairs live in a ring buffer; a row without a new pair (rejected step, no positive curvature)
    stores a copy of its newest pair: the BFGS update with the same pair twice is that update
    (idempotent), and the all-zero pairs of a young row are no-ops. A row stops when max |gradient|
    < ``tol`` (scikit-learn's lbfgs criterion) or its step underflows. Once the rows still running
    are fewer than ``compact`` x the batch, the batch is cut down to them (their rows of every
    tensor); once at most ``newton_tail`` are left they finish with exact Newton steps
    (:func:`newton`) if their Hessians cost at most ``newton_budget`` multiply-adds (not so for
    wide features). ``h0`` (C, d, d), optional: per-class inverse Hessians, L-BFGS's initial
    matrix for the models of class c (``problem.model_class``) instead of the identity, scaled by
    s.y / y.h0 y of the newest pair when ``scale_h0``. Returns (theta (P, d), FitInfo)."""
    t_start = time.perf_counter()
    P, d = problem.P, problem.d
    dev, dt = problem.neg_x.device, problem.neg_x.dtype
    out = torch.zeros(P, d, dtype=dt, device=dev) if theta0 is None else theta0.clone()
    theta = out.clone()
    ids = torch.arange(P, device=dev)  # global model of each batch row
    _, g = problem.value_and_grad(theta, value=False)
    evals, iters_sum = 1, 0
    gmax_out = torch.zeros(P, dtype=dt, device=dev)
    S = torch.zeros(history, P, d, dtype=dt, device=dev)
    Y = torch.zeros(history, P, d, dtype=dt, device=dev)
    R = torch.zeros(history, P, dtype=dt, device=dev)  # 1 / s.y (0 for an empty slot)
    n_pairs, head = 0, 0  # slot head - 1 is the newest

    def class_groups(cls: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """(start, end, h0[c]) of the contiguous run of each class (rows are kept sorted by class)."""
        c_ids, counts = torch.unique_consecutive(cls, return_counts=True)
        ends = np.cumsum(counts.tolist())
        return [(int(e - n), int(e), h0[c]) for c, n, e in zip(c_ids.tolist(), counts.tolist(), ends)]

    groups: list[tuple[int, int, torch.Tensor]] = []
    if h0 is not None:  # sort the rows by class so that H0 applies to slices
        order = torch.argsort(problem.model_class, stable=True)
        problem, ids, theta = problem.subset(order), ids[order], theta[order]
        g = g[order]
        groups = class_groups(problem.model_class)

    def apply_h0(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v[a:b] @ hc for a, b, hc in groups])

    gnorm = g.abs().amax(1)
    if h0 is None:
        step = torch.clamp(1.0 / g.norm(dim=1).clamp_min(1e-12), max=1.0)  # first step: |t g| <= 1
    else:
        step = torch.ones(P, dtype=dt, device=dev)  # a Newton-like first direction
    done = gnorm < tol
    it = 0
    for it in range(1, max_iter + 1):
        n_left = int((~done).sum())
        if n_left == 0:
            it -= 1
            break
        if len(ids) > 4 and n_left < compact * len(ids):  # drop finished rows from the batch
            fin = torch.nonzero(done).squeeze(1)
            out[ids[fin]] = theta[fin]
            gmax_out[ids[fin]] = gnorm[fin]
            keep = torch.nonzero(~done).squeeze(1)
            problem = problem.subset(keep)
            ids, theta, g, step, gnorm, done = (v.index_select(0, keep) for v in (ids, theta, g, step, gnorm, done))
            S, Y, R = S.index_select(1, keep), Y.index_select(1, keep), R.index_select(1, keep)
            groups = class_groups(problem.model_class) if h0 is not None else []
        if n_left <= newton_tail and n_left * problem.hessian_cost() <= newton_budget:  # the last few: Newton
            left = torch.nonzero(~done).squeeze(1)
            th_left, g_left, n_steps = newton(problem.subset(left), max_iter - it + 1, theta[left], tol)
            theta[left], gnorm[left] = th_left, g_left
            iters_sum += n_left * n_steps
            it += n_steps - 1
            break
        iters_sum += n_left
        # two-loop recursion: q = H g with H the L-BFGS inverse Hessian of each row
        q = g.clone()
        slots = [(head - 1 - i) % history for i in range(n_pairs)]  # newest first
        alphas = []
        for j in slots:
            a = R[j] * _dot(S[j], q)
            alphas.append(a)
            q.addcmul_(a[:, None], Y[j], value=-1.0)
        if h0 is not None:
            q = apply_h0(q)
        if n_pairs and (h0 is None or scale_h0):
            sn, yn = S[slots[0]], Y[slots[0]]
            yy = _dot(yn, yn if h0 is None else apply_h0(yn))
            q *= torch.where(yy > 0, _dot(sn, yn) / yy.clamp_min(1e-30), torch.ones_like(yy))[:, None]
        for j, a in zip(reversed(slots), reversed(alphas)):
            q.addcmul_((a - R[j] * _dot(Y[j], q))[:, None], S[j])
        slope = -_dot(g, q)  # along direction -q
        bad = slope >= 0  # not a descent direction (stale curvature): fall back to -g
        if bool(bad.any()):
            q[bad] = g[bad]
            slope = torch.where(bad, -_dot(g, g), slope)
        t = torch.where(done, torch.zeros_like(step), step)  # finished rows stay put
        s_vec = q * (-t)[:, None]  # the trial step
        _, g_new = problem.value_and_grad(theta + s_vec, value=False)
        evals += 1
        # Armijo's sufficient decrease f(trial) <= f + c1 t slope, with the change in f estimated
        # by the trapezoid rule along the segment, t (slope + slope_new) / 2 (exact for a quadratic;
        # J is convex and smooth): needs only the gradient at the trial point. A trial meeting the
        # stopping test is taken as is (near the optimum float32 rounding can fail the estimate).
        slope_new = -_dot(g_new, q)
        gmax_new = g_new.abs().amax(1)
        ok = ((slope_new <= -(1 - 2e-4) * slope) | (gmax_new < tol)) & ~done & torch.isfinite(slope_new)
        okf = ok.to(theta.dtype)[:, None]
        y_vec = g_new - g
        sy = _dot(s_vec, y_vec)
        theta.addcmul_(okf, s_vec)
        g.addcmul_(okf, y_vec)
        new_pair = ok & (sy > 1e-10)
        if bool(new_pair.any()):
            prev, w = (head - 1) % history, new_pair.to(theta.dtype)
            S[head] = torch.lerp(S[prev], s_vec, w[:, None]) if n_pairs else s_vec * w[:, None]
            Y[head] = torch.lerp(Y[prev], y_vec, w[:, None]) if n_pairs else y_vec * w[:, None]
            R[head] = torch.where(new_pair, 1.0 / sy.clamp_min(1e-10), R[prev])
            n_pairs, head = min(n_pairs + 1, history), (head + 1) % history
        # a rejected step shrinks to the zero of the secant of the slope (the 1-D minimiser of the
        # quadratic through both slopes), kept inside [t/10, t/2]
        shrink = torch.nan_to_num(slope / (slope - slope_new).clamp_min(1e-30), nan=0.25).clamp(0.1, 0.5)
        step = torch.where(ok, (step * step_growth).clamp(max=1.0), step * shrink)
        gnorm = torch.where(ok, gmax_new, gnorm)
        done = done | (gnorm < tol) | (step < 1e-8)
    out[ids] = theta
    gmax_out[ids] = gnorm
    conv = float((gmax_out < tol).float().mean()) if P else 1.0
    info = FitInfo(it, evals, conv, float(gmax_out.max()) if P else 0.0, time.perf_counter() - t_start,
                   iters_sum / max(P, 1))
    return out, info


def fit_bank(z: torch.Tensor, labels: torch.Tensor, negatives: np.ndarray, spec: BankSpec, l2: float,
             max_iter: int = 100, tol: float = 1e-4, history: int = 5, chunk: int = 16384,
             warm_start: int = 4, warm_rows: int | None = 256, compact: float = 0.6, newton_tail: int = 8,
             precondition: bool = True, scale_h0: bool = False, step_growth: float = 4.0,
             max_precond_floats: int = 2 ** 26, newton_budget: float = 5e8) -> tuple[torch.Tensor, FitInfo]:
    """Fit every model of ``spec`` (rows of the result, (P, D+1)), ``chunk`` models per batched
    solve to bound memory ((chunk, M) pool scores); the optimum of each J_p to max |grad| < ``tol``.

    Preconditioned path (``precondition``; it pays off on ill-conditioned features such as
    LeNet's, where plain L-BFGS needs ~3x the iterations, and costs more than it saves on
    well-conditioned ones): first solve one model per class on (up to ``warm_rows`` evenly spaced
    rows of) the union of its models' positives (:func:`union_spec`) with ``warm_start`` Newton
    steps; every model starts from its class's, and the inverse Hessians of those union models
    are L-BFGS's initial matrices (``scale_h0``: rescaled per row by s.y / y.H0 y). The plain path
    replaces it when C (D+1)^2 > ``max_precond_floats`` or one Newton step of the union models
    costs more than ``newton_budget`` multiply-adds (many classes, wide features). Plain path:
    every model starts at 0 with the usual scalar initial matrix. ``newton_tail``, ``compact``,
    ``history``, ``step_growth``: see :func:`fit_one_vs_rest`. Feature columns that are 0 on
    every row the bank uses are left out of the solve (their weights stay exactly 0). None of
    this changes the optimum, only the path to it."""
    if len(spec) == 0:
        return torch.zeros(0, z.shape[1], device=z.device), FitInfo(0, 0, 1.0, 0.0, 0.0)
    t0 = time.perf_counter()
    # features that are exactly 0 on every row the bank sees (dead ReLU units): their weights get
    # gradient l2 * w = 0 from w = 0 and stay 0, so the solve leaves them out (same optimum)
    rows = torch.as_tensor(np.union1d(np.asarray(negatives, dtype=np.int64), spec.pos_index), device=z.device)
    live = (z[rows] != 0).any(0)
    live[-1] = True  # the bias column
    full_d, dead = z.shape[1], not bool(live.all())
    if dead:
        z = z[:, live]
    out, infos = [], []
    for lo in range(0, len(spec), chunk):
        sel = np.arange(lo, min(lo + chunk, len(spec)))
        keep = np.isin(spec.pos_model, sel)
        sub = BankSpec(spec.model_class[sel], spec.model_k[sel], spec.pos_index[keep], spec.pos_model[keep] - lo)
        theta0 = h0 = None
        uspec = union_spec(sub, warm_rows) if precondition and warm_start > 0 else None
        n_cls = int(sub.model_class.max()) + 1
        if uspec is not None and n_cls * z.shape[1] ** 2 <= max_precond_floats:
            uprob = OneVsRestProblem(z, labels, negatives, uspec, l2)
            if uprob.P * uprob.hessian_cost() <= newton_budget:
                theta_u = newton(uprob, warm_start)[0]
                theta0 = theta_u[torch.as_tensor(np.searchsorted(uspec.model_class, sub.model_class), device=z.device)]
                h0 = torch.zeros(n_cls, z.shape[1], z.shape[1], dtype=z.dtype, device=z.device)
                h0[torch.as_tensor(uspec.model_class, device=z.device)] = torch.cholesky_inverse(
                    torch.linalg.cholesky(uprob.hessian(theta_u)))
        theta, info = fit_one_vs_rest(OneVsRestProblem(z, labels, negatives, sub, l2), max_iter, tol, history,
                                      theta0=theta0, compact=compact, newton_tail=newton_tail, h0=h0,
                                      scale_h0=scale_h0, step_growth=step_growth, newton_budget=newton_budget)
        out.append(theta)
        infos.append(info)
    w = [min(chunk, len(spec) - lo) for lo in range(0, len(spec), chunk)]
    total = FitInfo(max(i.iterations for i in infos), sum(i.evaluations for i in infos),
                    float(np.average([i.converged for i in infos], weights=w)),
                    max(i.max_grad for i in infos), time.perf_counter() - t0,
                    float(np.average([i.mean_iterations for i in infos], weights=w)))
    theta = torch.cat(out)
    if dead:
        theta = torch.zeros(len(theta), full_d, dtype=theta.dtype, device=theta.device).index_copy_(
            1, torch.nonzero(live).squeeze(1), theta)
    return theta, total


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


@dataclass(frozen=True)
class HeadTask:
    """What Eq. 1's performance term needs of a stage's head split that no model changes: each
    sample's logits with every head row at theta*, and their logsumexp without each row in turn.
    Computed once per stage, so that a step costs one (n, B) product, not an (n, B, H) tensor."""

    z: torch.Tensor  # (n, d) head-split features
    y_col: torch.Tensor  # (n,) their labels as head columns
    col: torch.Tensor  # (C,) class -> head column (-1 outside the head)
    base: torch.Tensor  # (n, H) logits at theta*
    lse_without: torch.Tensor  # (n, H) logsumexp over the head rows except column j


def head_task(theta_star: torch.Tensor, head: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> HeadTask:
    """The stage-constant part of :func:`task_loss` (see :class:`HeadTask`)."""
    hidx = torch.nonzero(head).squeeze(1)  # head classes, in label order
    col = torch.full((len(head),), -1, dtype=torch.long, device=z.device)
    col[hidx] = torch.arange(len(hidx), device=z.device)
    with torch.no_grad():
        base = z @ theta_star[hidx].T
        # leave-one-out logsumexp in O(nH): relative to the row max m, every column but the arg-max
        # keeps the max's own term 1 in the remaining sum (no cancellation); the arg-max column is
        # computed with itself masked
        m, arg = base.max(1, keepdim=True)
        e = torch.exp(base - m)
        rest = (e.sum(1, keepdim=True) - e).clamp_min(torch.finfo(base.dtype).tiny)
        lse = m + torch.log(rest)
        masked = base.scatter(1, arg, float("-inf"))
        lse.scatter_(1, arg, torch.logsumexp(masked, 1, keepdim=True))
    return HeadTask(z, col[y], col, base, lse)


def task_loss(theta_hat: torch.Tensor, cls: torch.Tensor, t: HeadTask) -> torch.Tensor:
    """Eq. 1's performance term per model: multi-class CE of g on the head-split data of ``t``
    (:func:`head_task`) when the predicted row theta_hat_p replaces its class's row among the head
    classes' theta*. theta_hat (B, d), cls (B,) in head. Returns (B,) mean CE over the samples."""
    c_col = t.col[cls]  # (B,)
    own = t.z @ theta_hat.T  # (n, B) the predicted row's logits
    lse = torch.logaddexp(t.lse_without[:, c_col], own)  # (n, B)
    target = torch.where(t.y_col[:, None] == c_col[None, :], own,
                         t.base.gather(1, t.y_col[:, None]).expand(-1, len(cls)))
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
        use_task = cfg.task_weight > 0 and int(head.sum()) >= 2
        stage_task = head_task(data.theta_star, head, z_t, y_t) if use_task else None
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
            if stage_task is not None and bool(in_head.any()):
                task[in_head] = task_loss(pred[in_head], cls[in_head], stage_task)
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
