"""Classification losses for long-tailed training, behind one registry.

Every loss is an ``nn.Module`` built from the training class counts and called as
``loss(logits, target, epoch)`` so that schedules such as deferred re-weighting can switch on by
epoch without the trainer knowing about them.

Re-weighted losses use per-sample weights w_{y_i} (class weights normalised to mean 1 over the
classes) and one of two batch reductions, ``loss_params.reduction``:
- ``weight_sum``: sum_i w_{y_i} l_i / sum_i w_{y_i}, PyTorch's weighted ``cross_entropy`` with
  reduction mean, as the LDAM-DRW code computes DRW and its re-weighting baselines; the default
  of ``cost_sensitive``, ``cb_softmax`` and ``ldam``;
- ``batch``: sum_i w_{y_i} l_i / B, as Cui et al.'s class-balanced code (TensorFlow: the softmax
  loss with per-example weights and ``SUM_BY_NONZERO_WEIGHTS``, the sigmoid and focal losses
  summed and divided by the number of positive labels, i.e. B); the default of ``cb_focal``,
  which LDAM-DRW's focal loss also averages over the batch.
The two differ whenever a batch's weights do not sum to B (a batch of head-class samples has a
small weight sum: ``weight_sum`` scales its loss up to that of an unweighted batch).

The two embedding losses of OLTR's comparison (range loss, lifted structure) act on features,
not logits; they are plain functions here (:func:`range_loss`, :func:`lifted_structure_loss`)
used by the ``range_loss`` / ``lifted_loss`` methods in :mod:`longtail.methods.baselines`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

LossFn = Callable[..., "LongTailLoss"]
LOSSES: Registry[LossFn] = Registry("loss")
register_loss = LOSSES.register


def available_losses() -> list[str]:
    return LOSSES.names()


def create_loss(name: str, class_counts: np.ndarray, num_epochs: int = 1, **params) -> "LongTailLoss":
    return LOSSES.build(name, np.asarray(class_counts), num_epochs=num_epochs, params_key="loss_params", **params)


# --- class weights ---------------------------------------------------------------------------
def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """w_j proportional to 1/n_j, normalised to mean 1 over classes (cost-sensitive CE)."""
    w = 1.0 / np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return w * len(w) / w.sum()


def effective_number(counts: np.ndarray, beta: float) -> np.ndarray:
    """E_n = (1 - beta^n) / (1 - beta) (Cui et al. 2019, Eq. 2 / Prop. 1)."""
    n = np.asarray(counts, dtype=np.float64)
    return -np.expm1(n * np.log(beta)) / (1.0 - beta)  # expm1: exact for beta near 1


def class_balanced_weights(counts: np.ndarray, beta: float = 0.9999) -> np.ndarray:
    """w_j = 1 / E_{n_j}, normalised so sum_j w_j = C (Cui et al. 2019, Sec. 4; Eq. 5)."""
    w = 1.0 / effective_number(np.maximum(np.asarray(counts), 1), beta)
    return w * len(w) / w.sum()


def ldam_margins(counts: np.ndarray, max_margin: float = 0.5) -> np.ndarray:
    """Delta_j = C / n_j^(1/4) with C such that max_j Delta_j = max_margin (Cao et al. 2019, Eq. 12)."""
    m = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** -0.25
    return m * (max_margin / m.max())


class LongTailLoss(nn.Module):
    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1) -> None:
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(class_counts, dtype=torch.float32))
        self.num_epochs = num_epochs

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        raise NotImplementedError


REDUCTIONS = ("weight_sum", "batch")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss_params.reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def weighted_reduce(per_sample: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
                    reduction: str = "weight_sum") -> torch.Tensor:
    """Batch loss from per-sample losses l_i (B,) and class weights w (C,): ``weight_sum``
    sum_i w_{y_i} l_i / sum_i w_{y_i}; ``batch`` sum_i w_{y_i} l_i / B; the plain mean without
    weights (module docstring)."""
    if weights is None:
        return per_sample.mean()
    w = weights[target]  # (B,)
    total = (w * per_sample).sum()
    return total / w.sum() if reduction == "weight_sum" else total / len(per_sample)


def focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample softmax focal loss -(1 - p_y)^gamma log p_y (Lin et al. 2017, Eq. 5, applied to
    the softmax probability of the true class as in the multi-class comparisons of LDAM-DRW)."""
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)  # (B,)
    if gamma == 0:
        return -logp
    return -((1.0 - logp.exp()).clamp(min=0.0) ** gamma) * logp


@register_loss("ce")
class CrossEntropy(LongTailLoss):
    """Plain softmax cross-entropy."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)


class _WeightedLoss(LongTailLoss):
    """Holds fixed per-class weights (buffer ``weights``, (C,))."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int, weights: np.ndarray,
                 reduction: str = "weight_sum") -> None:
        super().__init__(class_counts, num_epochs)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        self.reduction = check_reduction(reduction)


@register_loss("cost_sensitive")
class CostSensitiveCE(_WeightedLoss):
    """Cost-sensitive CE: class weights proportional to inverse class frequency, mean 1 (the
    "Cost-Sensitive" rows of MetaModelNet Table 1 / OLTR Table 5; e.g. Huang et al. 2016).
    ``reduction`` weight_sum (PyTorch's weighted CE) by default."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1, reduction: str = "weight_sum") -> None:
        super().__init__(class_counts, num_epochs, inverse_frequency_weights(class_counts), reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return weighted_reduce(per_sample, target, self.weights, self.reduction)


@register_loss("cb_softmax")
class ClassBalancedSoftmax(_WeightedLoss):
    """Class-balanced softmax CE (Cui et al., CVPR 2019, Eq. 5 with the softmax loss): weights
    (1 - beta) / (1 - beta^n_y), normalised to sum C; beta = 0.9999 by default. ``reduction``
    weight_sum by default (PyTorch's weighted CE, as LDAM-DRW's class-balanced re-weighting
    baseline); Cui et al.'s own code divides by the batch size (``reduction: batch``)."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1, beta: float = 0.9999,
                 reduction: str = "weight_sum") -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(class_counts, num_epochs, class_balanced_weights(class_counts, beta), reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return weighted_reduce(per_sample, target, self.weights, self.reduction)


@register_loss("focal")
class FocalLoss(LongTailLoss):
    """Softmax focal loss (Lin et al., ICCV 2017, Eq. 5), no class weights; gamma = 1 as in
    LDAM-DRW's focal baseline (Lin et al. use gamma = 2 with the sigmoid form for detection).
    gamma = 0 is plain CE."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1, gamma: float = 1.0) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        super().__init__(class_counts, num_epochs)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return focal_terms(logits, target, self.gamma).mean()


@register_loss("cb_focal")
class ClassBalancedFocal(_WeightedLoss):
    """Class-balanced focal loss (Cui et al. 2019, Eq. 5 with the focal loss): focal terms
    weighted by the effective-number weights. Choice: the softmax focal form (as ``focal``),
    Cui et al. use the sigmoid form; gamma = 1, beta = 0.9999 by default. ``reduction`` batch by
    default: Cui et al.'s focal loss sums the weighted terms and divides by the number of positive
    labels (= B), and LDAM-DRW's focal loss averages over the batch too."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1, beta: float = 0.9999,
                 gamma: float = 1.0, reduction: str = "batch") -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        super().__init__(class_counts, num_epochs, class_balanced_weights(class_counts, beta), reduction)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return weighted_reduce(focal_terms(logits, target, self.gamma), target, self.weights, self.reduction)


@register_loss("ldam")
class LDAMLoss(_WeightedLoss):
    """Label-distribution-aware margin loss with deferred re-weighting (LDAM-DRW; Cao et al.,
    NeurIPS 2019, Eq. 13 and Alg. 1).

    Loss: CE over logits with ``scale * Delta_y`` subtracted from the true class logit, where
    Delta_j = C n_j^(-1/4) and max_j Delta_j = ``max_margin`` (0.5). The paper's logits are
    s * cos(x, w_j) with s = 30, so the ``ldam`` method gives the network a cosine head with a
    fixed scale ``scale`` and this loss subtracts ``scale * Delta_y`` = s (cos - Delta_y).
    DRW: plain (unweighted) LDAM before epoch ``drw_epoch`` (0-based; default int(0.8 * epochs),
    i.e. 160 of 200 as in the paper), then class-balanced weights with ``beta`` (0.9999).
    ``drw_epoch >= epochs`` gives LDAM without re-weighting, ``drw_epoch = 0`` LDAM-RW.
    The re-weighted phase reduces by ``reduction`` weight_sum (default: the LDAM-DRW code passes
    the weights to PyTorch's cross-entropy, whose mean divides by sum_i w_{y_i}) or batch.
    """

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1, max_margin: float = 0.5,
                 scale: float = 30.0, beta: float = 0.9999, drw_epoch: int | None = None,
                 reduction: str = "weight_sum") -> None:
        if max_margin <= 0 or scale <= 0:
            raise ValueError(f"max_margin and scale must be > 0, got {max_margin}, {scale}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(class_counts, num_epochs, class_balanced_weights(class_counts, beta), reduction)
        self.register_buffer("margins", torch.as_tensor(ldam_margins(class_counts, max_margin), dtype=torch.float32))
        self.scale = float(scale)
        self.drw_epoch = int(0.8 * num_epochs) if drw_epoch is None else int(drw_epoch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        logits = logits.float()
        # subtract s * Delta_y from the true class only: (B, C)
        shifted = logits - F.one_hot(target, logits.shape[1]) * (self.scale * self.margins[target])[:, None]
        per_sample = F.cross_entropy(shifted, target, reduction="none")
        return weighted_reduce(per_sample, target, self.weights if epoch >= self.drw_epoch else None, self.reduction)


@register_loss("balanced_softmax")
class BalancedSoftmax(LongTailLoss):
    """Balanced softmax (Ren et al., NeurIPS 2020, Eq. 4): CE on logits + log(prior), prior
    pi_j = n_j / N; inference uses the raw logits (the label-shift correction)."""

    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1) -> None:
        super().__init__(class_counts, num_epochs)
        prior = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        self.register_buffer("log_prior", torch.as_tensor(np.log(prior / prior.sum()), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.log_prior, target)


# --- embedding (metric) losses ---------------------------------------------------------------
def _squared_distances(emb: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (B, B), clamped at 0 against round-off."""
    sq = (emb * emb).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T).clamp(min=0.0)


def range_loss(emb: torch.Tensor, labels: torch.Tensor, k: int = 2, margin: float = 10.0,
               alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """Range loss (Zhang et al., ICCV 2017, Eqs. 2-4) on one batch of embeddings (B, D).

    L_intra = sum over classes in the batch of the harmonic mean of its k largest pairwise
    squared distances ("ranges", Eq. 3; classes with one sample in the batch are skipped and a
    class with fewer than k pairs uses all of them); L_inter = max(margin - D_center, 0) with
    D_center the smallest squared distance between two class centres of the batch (Eq. 4).
    Returns alpha * L_intra + beta * L_inter (Eq. 2).
    """
    emb = emb.float()
    d2 = _squared_distances(emb)
    classes = torch.unique(labels)
    intra = emb.new_zeros(())
    centres = []
    for c in classes:
        idx = torch.nonzero(labels == c).squeeze(1)
        centres.append(emb[idx].mean(0))
        if len(idx) < 2:
            continue
        iu = torch.triu_indices(len(idx), len(idx), offset=1, device=emb.device)
        pair_d = d2[idx][:, idx][iu[0], iu[1]]  # (n_c (n_c - 1) / 2,)
        top = torch.topk(pair_d, min(k, len(pair_d))).values
        intra = intra + len(top) / (1.0 / top.clamp(min=1e-12)).sum()
    inter = emb.new_zeros(())
    if len(centres) >= 2:
        cd = _squared_distances(torch.stack(centres))  # (K, K)
        off = ~torch.eye(len(centres), dtype=torch.bool, device=emb.device)
        inter = (margin - cd[off].min()).clamp(min=0.0)
    return alpha * intra + beta * inter


def lifted_structure_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Lifted structured embedding loss (Oh Song et al., CVPR 2016, Eq. 4) on a batch (B, D).

    For each positive pair (i, j): J_ij = log(sum_{k: y_k != y_i} exp(margin - D_ik)
    + sum_{l: y_l != y_j} exp(margin - D_jl)) + D_ij with Euclidean D; the loss is
    1 / (2|P|) sum_P max(0, J_ij)^2. Pairs without any negative in the batch are skipped; a batch
    without positive pairs gives 0.
    """
    emb = emb.float()
    dist = _squared_distances(emb).clamp(min=1e-12).sqrt()  # (B, B); eps keeps sqrt' finite
    same = labels[:, None] == labels[None, :]
    pos_i, pos_j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
    if len(pos_i) == 0 or bool(same.all()):
        return emb.sum() * 0.0
    # log sum_k exp(margin - D_ik) over negatives of each anchor, (B,)
    neg_logits = (margin - dist).masked_fill(same, float("-inf"))
    # J_ij needs the union of both anchors' negatives: logaddexp of the two per-anchor sums
    j = torch.logaddexp(torch.logsumexp(neg_logits[pos_i], 1), torch.logsumexp(neg_logits[pos_j], 1))
    j = j + dist[pos_i, pos_j]
    return (j.clamp(min=0.0) ** 2).sum() / (2.0 * len(pos_i))
