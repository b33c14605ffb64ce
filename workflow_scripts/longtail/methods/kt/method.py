"""Compositional knowledge transfer (KT, Parisot et al., CVPR 2022), training-free, and the
"few-shot excluded" backbone of its Table 2.

The ``kt`` method starts from a cosine-classifier backbone run (``init_from``) and never trains:
``fit`` reads the parent's classifier weights (``head.weight``, scale ``head.scale``) and its
cached training features (``run.parent_features``), builds the classifier named by the
``classifier`` parameter with the pure functions of :mod:`longtail.methods.kt.transfer`, and
writes it into a :class:`KTHead` on top of the parent's frozen backbone
(:class:`longtail.methods.frozen.FrozenBackboneMethod`), so the shared ``infer`` rule predicts
with the result.

Choices where the paper is silent (all configurable, see :mod:`longtail.methods.kt.config`):
- W_h(k) replaces the classifier of every class (``apply_to: all``): Eq. 7 is stated for every i
  and Eq. 8 uses W_h(k) as the whole classifier (Table 1's w_h(100) changes many-shot accuracy too).
- Prototypes come from the training split only (Eq. 3); tau = 10 (Sec. 4.1).
- The new head keeps the parent's learned cosine scale s (Eq. 2); s matters for the ensemble,
  whose members' softmaxes are averaged (Eq. 8).
- Counts for W(k) (Eq. 6) are the parent's training counts, with 0 for classes a masked
  backbone (``plain_masked``) never saw, so unseen classes never give knowledge.
- The ensemble head returns log((1/K) sum_k softmax(s cos(f, w_h(k)))): its softmax is Eq. 8's
  average and its max softmax the ensemble's confidence (open-set rejection uses it).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import transfer as K
from .config import excluded_classes
from ...data import DatasetInfo
from ...samplers import Sampler
from ...trainer import HISTORY_COLUMNS, TrainRun
from .. import register_method
from ..baselines.method import Plain
from ..frozen import FrozenBackboneMethod


class KTHead(nn.Module):
    """Cosine classifier(s) built by KT. ``weight`` (M, C, D): M member classifiers; ``scale`` s.

    M == 1: logits = s cos(x, w_i) (a plain cosine head). M > 1: the log of the mean of the
    members' softmaxes (Eq. 8), so softmax(forward(x)) is the ensemble's prediction.
    Buffers keep what the figures need: prototypes p (C, D), the parent's classifier w (C, D),
    each member's attention alpha (M, C, C) and threshold k (M,; -1 = prototype member), and the
    training counts used for W(k) (C,)."""

    def __init__(self, dim: int, num_classes: int, members: int = 1, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, num_classes, dim), requires_grad=False)
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=False)
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("base_weight", torch.zeros(num_classes, dim))
        self.register_buffer("attention", torch.zeros(members, num_classes, num_classes))
        self.register_buffer("ks", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = K.cosine_logits(x.float(), self.weight, self.scale)  # (M, B, C)
        return logits[0] if logits.shape[0] == 1 else K.log_mean_softmax(logits)


def parent_classifier(parent: Mapping) -> tuple[torch.Tensor, float | None]:
    """(w (C, D), learned cosine scale or None) from a parent model.pt dict."""
    state = parent["model"]
    if "head.weight" not in state:
        raise ValueError("KT needs a parent run with a classifier head ('head.weight' missing)")
    w = state["head.weight"].float()
    if w.ndim == 3:  # a KT head as parent: its first member
        w = w[0]
    scale = state.get("head.scale")
    return w, (float(scale) if scale is not None else None)


def _no_attention(c: int) -> torch.Tensor:
    return torch.zeros(c, c)


@register_method("kt")
class KT(FrozenBackboneMethod):
    """Training-free KT on the parent's frozen backbone; ``classifier`` selects Table 1's row
    (see :class:`longtail.methods.kt.config.KTConfig`)."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return KTHead(dim, info.num_classes, self.cfg.members)

    def init_head(self, head: nn.Module, parent: Mapping, info: DatasetInfo) -> None:
        """The head's scale s (config, else the parent's learned one, else 16); remember the
        parent's classifier and the training counts for ``fit``."""
        self._w, parent_scale = parent_classifier(parent)
        scale = self.cfg.scale if self.cfg.scale is not None else (parent_scale if parent_scale is not None else 16.0)
        head.scale.fill_(scale)
        counts = list(info.class_counts)
        for c in excluded_classes(parent["config"], counts):
            counts[c] = 0  # never seen by the backbone: gives no knowledge (Eq. 6)
        self._counts = torch.tensor(counts, dtype=torch.long)

    def classifiers(self, p: torch.Tensor, w: torch.Tensor, counts: torch.Tensor
                    ) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """The head's members: [(weights (C, D), alpha (C, C), k)] (k = -1: no transfer)."""
        cfg = self.cfg
        if cfg.classifier == "prototypes":  # Table 1 "Prototypes"
            return [(p, _no_attention(len(p)), -1)]
        if cfg.classifier == "proto_classifier":  # Eq. 7 without the transfer term
            return [(F.normalize(p, dim=1) + F.normalize(w, dim=1), _no_attention(len(p)), -1)]
        continual = cfg.classifier == "continual"  # Eq. 9: w_hc(k) drops each class's own w_i
        ks = (cfg.k,) if cfg.classifier == "wh" else cfg.ks
        out = [(p, _no_attention(len(p)), -1)] if continual and cfg.include_prototypes else []
        return out + [(*K.kt_classifier(p, w, counts, k, cfg.tau, cfg.attention, continual=continual,
                                        apply_to=cfg.apply_to), k) for k in ks]

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        """Build the classifier from cached features; no optimizer, no gradient step."""
        x, y = self.features(run, "train", "cpu")
        head: KTHead = model.head
        p = K.prototypes(x, y, head.counts.numel())  # Eq. 3
        members = self.classifiers(p, self._w, self._counts)
        with torch.no_grad():
            head.prototypes.copy_(p)
            head.base_weight.copy_(self._w)
            head.counts.copy_(self._counts)
            for m, (wm, alpha, k) in enumerate(members):
                head.weight[m].copy_(wm)
                head.attention[m].copy_(alpha)
                head.ks[m] = k
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))


class _SubsetSampler(Sampler):
    """Draws with ``inner`` from the kept samples only and maps its indices back."""

    def __init__(self, inner: Sampler, keep: np.ndarray) -> None:
        self.inner, self.keep = inner, keep
        self.labels, self.num_epochs = inner.labels, inner.num_epochs
        self.classes, self.counts, self.by_class = inner.classes, inner.counts, inner.by_class

    def indices(self, epoch: int, rng: np.random.Generator) -> np.ndarray:
        return self.keep[self.inner.indices(epoch, rng)]

    def class_probs(self, epoch: int = 0) -> np.ndarray:
        return self.inner.class_probs(epoch)


@register_method("plain_masked")
class PlainMasked(Plain):
    """Plain training without some classes (KT Table 2 "few-shot excluded"): the sampler skips
    their images and their logits are masked (to the dtype's minimum) in the loss and at
    inference, so their classifier rows get no gradient and are never predicted."""

    def _excluded(self, num_classes: int, counts) -> torch.Tensor:
        mask = torch.zeros(num_classes, dtype=torch.bool)
        mask[excluded_classes(self.cfg.to_dict(), counts)] = True
        return mask

    def build_model(self, info: DatasetInfo) -> nn.Module:
        self._mask = self._excluded(info.num_classes, info.class_counts)
        if bool(self._mask.all()):
            raise ValueError("plain_masked excludes every class: lower exclude_at_most / exclude_fewer_than")
        return super().build_model(info)

    def create_sampler(self, labels: np.ndarray) -> Sampler:
        keep = np.flatnonzero(~self._mask.numpy()[labels])
        return _SubsetSampler(super().create_sampler(labels[keep]), keep)

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        mask = self._mask.to(logits.device)
        return logits.masked_fill(mask[None, :], torch.finfo(logits.dtype).min)

    def training_loss(self, model, batch):
        logits = self._masked(model(batch.x))
        return batch.loss_fn(logits, batch.y, batch.epoch), logits

    def infer(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = model.features(x)
        return self._masked(model.head(feats)), feats
