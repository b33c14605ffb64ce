"""Compositional knowledge transfer (Parisot et al., CVPR 2022): pure tensor functions of Eqs. 3-9.

Notation (shapes): C classes, D feature dimension, K ensemble members.
- p (C, D): class prototypes, means of L2-normalised training features (Eq. 3).
- w (C, D): the learned cosine-classifier weights of the backbone (one row per class).
- n (C,): training images per class; only classes with n_j > k give knowledge (Eq. 6).

Everything here is training-free linear algebra on cached features and classifier weights; the
method in :mod:`longtail.methods.kt` wires it to the workflow.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# Table 6 (Appendix C): which representation queries (keys) and which is recomposed (values).
# "p->w" is Eqs. 4-6: prototypes attend to classifier weights, and classifier weights are mixed.
ATTENTION_DIRECTIONS: dict[str, tuple[str, str]] = {
    "p->w": ("p", "w"),
    "w->p": ("w", "p"),
    "w->w": ("w", "w"),
    "p->p": ("p", "p"),
}


def prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Eq. 3: p_i = (1/n_i) sum_{j: y_j = i} f(x_j)/||f(x_j)||. (N, D), (N,) -> (C, D).

    A class without training samples gets a zero row (it cannot be added by prototype)."""
    f = F.normalize(features.float(), dim=1)
    labels = labels.long()
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype).index_add_(0, labels, f)
    n = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(f.dtype)
    return sums / n[:, None]


def source_mask(counts: Sequence[int] | torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 6: the classes whose classifiers may give knowledge, n_j > k. (C,) bool."""
    n = torch.as_tensor(counts)
    return n > k


def attention(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, tau: float = 10.0) -> torch.Tensor:
    """Eq. 5: alpha_ij = softmax_j(tau * cos(q_i, k_j)) over the allowed classes j (``mask``).

    (C, D), (C, D), (C,) -> (C, C); columns outside ``mask`` are exactly 0 and rows sum to 1."""
    if not bool(mask.any()):
        raise ValueError("no class has more than k training images: lower k")
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(keys.float(), dim=1).T  # (C, C) cosines
    sim = sim.masked_fill(~mask[None, :].to(sim.device), float("-inf"))
    return torch.softmax(tau * sim, dim=1)


def transfer(alpha: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Eq. 4: w_kt_i = sum_j alpha_ij v_j/||v_j||. (C, C), (C, D) -> (C, D)."""
    return alpha @ F.normalize(values.float(), dim=1)


def compose(w_kt: torch.Tensor, p: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7 (w given): w_h = w_kt/||w_kt|| + p/||p|| + w/||w||;
    Eq. 9 (w None, continual): w_hc = w_kt/||w_kt|| + p/||p||. Rows of (C, D)."""
    out = F.normalize(w_kt.float(), dim=1) + F.normalize(p.float(), dim=1)
    return out if w is None else out + F.normalize(w.float(), dim=1)


def kt_classifier(p: torch.Tensor, w: torch.Tensor, counts: Sequence[int] | torch.Tensor, k: int,
                  tau: float = 10.0, direction: str = "p->w", continual: bool = False,
                  apply_to: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """The knowledge-transfer classifier W_h(k) (Eq. 7) or W_hc(k) (Eq. 9, ``continual``).

    ``direction``: Table 6's attention direction (query -> recomposed representation).
    ``apply_to``: "all" replaces every class's classifier (Eq. 7 holds for every i and W_h(k) is the
    classifier of Eq. 8); "tail" replaces only classes with n_i <= k and keeps w_i elsewhere.
    Returns (weights (C, D), alpha (C, C))."""
    if direction not in ATTENTION_DIRECTIONS:
        raise ValueError(f"attention direction '{direction}' is unknown; choose one of {list(ATTENTION_DIRECTIONS)}")
    if apply_to not in ("all", "tail"):
        raise ValueError(f"apply_to '{apply_to}' is unknown; choose all or tail")
    reps = {"p": p, "w": w}
    q_name, v_name = ATTENTION_DIRECTIONS[direction]
    mask = source_mask(counts, k)
    alpha = attention(reps[q_name], reps[v_name], mask, tau)
    w_kt = transfer(alpha, reps[v_name])
    out = compose(w_kt, p, None if continual else w)
    if apply_to == "tail":
        keep = mask  # classes with n_i > k keep their learned classifier
        out = torch.where(keep[:, None], F.normalize(w.float(), dim=1), out)
    return out, alpha


def cosine_logits(x: torch.Tensor, weights: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Eqs. 1-2: s * cos(f(x), w_i). (B, D), (..., C, D) -> (..., B, C)."""
    return scale * torch.matmul(F.normalize(x, dim=-1), F.normalize(weights, dim=-1).transpose(-1, -2))


def log_mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8 in log space: log((1/K) sum_k softmax(logits_k)). (K, B, C) -> (B, C).

    softmax of the result is exactly the ensemble's averaged distribution."""
    k = logits.shape[0]
    return torch.logsumexp(torch.log_softmax(logits.float(), dim=-1), dim=0) - torch.log(
        torch.tensor(float(k), device=logits.device))


def top_attended(alpha: torch.Tensor, i: int, n: int = 2, exclude_self: bool = True) -> list[int]:
    """The ``n`` classes class ``i`` attends to most (Fig. 6 picks the top two)."""
    row = alpha[i].clone()
    if exclude_self:
        row[i] = -1.0
    return [int(j) for j in torch.argsort(row, descending=True)[:n]]
