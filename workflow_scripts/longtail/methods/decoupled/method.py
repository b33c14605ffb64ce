"""Classifier-stage methods on a frozen backbone, and OpenMax.

Decoupling (Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020, Sec. 4.2): the representation of a jointly trained run (``init_from``, the plain
backbone by default) is kept and only the classifier changes:
- ``crt``: classifier re-training, a freshly initialised head trained with class-balanced sampling;
- ``lws``: learnable weight scaling, w_i <- f_i * w_i with only f_i trained (class-balanced);
- ``tau_norm``: w_i <- w_i / ||w_i||^tau with tau chosen on the val split;
- ``ncm``: nearest class mean on centred, L2-normalised features (the reference's ``cl2n``).
OpenMax (Bendale & Boult, CVPR 2016, Alg. 1-2; math in :mod:`longtail.methods.decoupled.openmax`) recalibrates
the parent's logits with per-class Weibull models and an unknown class, and rejects (pred -1)
where the unknown class wins.

All of them read the parent's cached features (``run.parent_features``, computed once by the
parent's infer job) on its frozen backbone (:class:`longtail.methods.frozen.FrozenBackboneMethod`).
cRT and LWS train their head with the shared trainer on those features (the method's sampler,
loss, lr schedule, checkpoint/resume; no data augmentation: features are cached, so for streamed
datasets with random crops this is cRT on the un-augmented view). The cached features must be
the parent's backbone embedding, as the shared ``Method.infer`` returns them (plain, cosine,
every loss/sampler baseline). model.pt holds the full network (parent backbone + new head), so
the shared infer rule predicts with it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import openmax as om
from ..config import HEADS
from ...contracts import predictions_frame
from ...data import DatasetInfo, SplitData
from ...models import create_head
from ...trainer import TrainRun
from .. import register_method
from ..frozen import FrozenBackboneMethod, class_means, parent_head


def mean_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of per-class accuracies over the classes present (= top-1 on a balanced split)."""
    hit = (logits.argmax(1) == labels).float()
    accs = [hit[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(accs).mean()) if accs else float("nan")


class ClassifierStage(FrozenBackboneMethod):
    """A new classifier on the parent's frozen backbone; the head kind is pinned to the parent's,
    and the parent's head is handed to ``load_parent_head`` (unless ``uses_parent_head`` is
    False: cRT builds a fresh head of any kind)."""

    uses_parent_head: ClassVar[bool] = True

    def load_parent_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        """Fill the new head from the parent's (default: nothing)."""

    def resolve(self, parent: Mapping) -> dict[str, Any]:
        out = super().resolve(parent)
        p_head = parent["config"].get("head")
        if self.uses_parent_head:
            if p_head not in HEADS:
                raise ValueError(f"method '{self.name}' needs a parent with a linear or cosine head, not {p_head}")
            if self.cfg.head not in (None, p_head):
                raise ValueError(f"head '{self.cfg.head}' differs from the parent's '{p_head}'; leave it null")
        elif self.cfg.head is None and p_head not in HEADS:
            raise ValueError(f"the parent's head '{p_head}' has no counterpart here; set head: linear or cosine")
        return {**out, "head": self.cfg.head or p_head}

    def init_head(self, head: nn.Module, parent: Mapping, info: DatasetInfo) -> None:
        if self.uses_parent_head:
            self.load_parent_head(head, parent_head(parent, parent["config"]["head"]))


@register_method("crt")
class CRT(ClassifierStage):
    """cRT (decoupling Sec. 4.2): re-initialise the classifier and train it alone on the frozen
    representation with class-balanced sampling (4 images per drawn class, 10 epochs). ``head``
    names the new classifier's kind (null: the parent's)."""

    uses_parent_head = False

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return create_head(self.cfg.head, dim, info.num_classes, self.cfg.cosine_scale)


class ScaledHead(nn.Module):
    """LWS head: logits_i = f_i * base(x)_i, i.e. w_i <- f_i w_i and b_i <- f_i b_i for a linear
    base (the bias is scaled with its row, so f = 1 reproduces the parent's logits exactly)."""

    def __init__(self, base: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.scales = nn.Parameter(torch.ones(num_classes))  # f_i, initialised at 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.scales


@register_method("lws")
class LWS(ClassifierStage):
    """LWS (decoupling Sec. 4.2): keep the parent's classifier and learn one scale f_i per class
    (w_i <- f_i w_i) with class-balanced sampling, 5 epochs. On a cosine parent head the scale
    multiplies the class's logit (scaling w_i alone would cancel in the cosine)."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return ScaledHead(create_head(self.cfg.head, dim, info.num_classes, self.cfg.cosine_scale), info.num_classes)

    def load_parent_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.base.load_state_dict(parent_head.state_dict())
        head.base.requires_grad_(False)


class TauNormHead(nn.Module):
    """logits = x @ (w_i / ||w_i||^tau)^T, no bias; ``tau`` is a buffer saved in model.pt."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim))  # the parent's w (C, D)
        self.register_buffer("tau", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, tau_normalize(self.weight, self.tau))


def tau_normalize(weight: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """w_i / ||w_i||_2^tau row-wise (weight (C, D)); tau = 0 returns w unchanged."""
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight / norms.pow(tau)


def select_tau(weight: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
               grid: np.ndarray) -> tuple[float, list[float]]:
    """The tau of ``grid`` with the highest mean per-class val accuracy (ties: the smallest tau,
    the one closest to the original classifier); returns (tau, accuracy per grid value)."""
    accs = [mean_class_accuracy(F.linear(x_val, tau_normalize(weight, float(t))), y_val) for t in grid]
    return float(grid[int(np.argmax(accs))]), accs


@register_method("tau_norm")
class TauNorm(ClassifierStage):
    """tau-normalisation (decoupling Sec. 4.2, Eq. 3): w_i / ||w_i||^tau with the bias dropped.
    tau is chosen on the val split only (mean per-class accuracy on the parent's cached val
    features, grid 0..tau_max by tau_step); the test split is never read. Every tau's val
    accuracy goes to history.parquet (columns tau, val_acc, selected)."""

    def resolve(self, parent: Mapping) -> dict[str, Any]:
        out = super().resolve(parent)
        if out["head"] != "linear":
            raise ValueError(f"tau_norm needs a parent with a linear head, not '{out['head']}'")
        return out

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return TauNormHead(dim, info.num_classes)

    def load_parent_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.weight.copy_(parent_head.weight.detach())

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        head = model.head
        if self.cfg.tau is not None:
            grid = np.array([self.cfg.tau])
        else:
            grid = np.round(np.arange(0.0, self.cfg.tau_max + self.cfg.tau_step / 2, self.cfg.tau_step), 10)
        x_val, y_val = self.features(run, "val", "cpu")
        tau, accs = select_tau(head.weight.cpu(), x_val, y_val, grid)
        head.tau.fill_(tau)
        for t, a in zip(grid, accs):
            print(f"tau {t:.3g}: val mean class acc {a:.4f}{'  <- chosen' if t == tau else ''}", file=sys.stderr)
        return pd.DataFrame({"tau": grid.astype(float), "val_acc": accs, "selected": grid == tau,
                             "seconds": time.perf_counter() - t0})


class NCMHead(nn.Module):
    """NCM head on class centroids (C, D) and the training-feature mean (D,), both buffers.

    euclidean (decoupling's ``cl2n``): z = (x - mean) / ||x - mean||, logits_j = -scale ||z - c_j||^2
    with c_j the class means of the training z (not re-normalised, as the reference).
    cosine: logits_j = scale * cos(x, c_j) with c_j the class means of the raw features."""

    def __init__(self, dim: int, num_classes: int, scale: float = 1.0, distance: str = "euclidean") -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(num_classes, dim))
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.scale, self.distance = scale, distance

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The feature transform the centroids live in: cl2n for euclidean, none for cosine."""
        return F.normalize(x - self.feat_mean, dim=1) if self.distance == "euclidean" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.centroids, dim=1))
        z = self.transform(x)  # (B, D)
        d2 = (z * z).sum(1, keepdim=True) + (self.centroids ** 2).sum(1) - 2.0 * z @ self.centroids.T  # (B, C)
        return -self.scale * d2.clamp_min(0.0)

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Centroids from training features x (N, D) and labels y (N,)."""
        self.feat_mean.copy_(x.mean(0) if self.distance == "euclidean" else torch.zeros_like(self.feat_mean))
        self.centroids.copy_(class_means(self.transform(x), y, self.centroids.shape[0]))


@register_method("ncm")
class NCM(ClassifierStage):
    """NCM (decoupling Sec. 4.2) on the parent's train-split features. Default (``distance:
    euclidean``) as the reference's ``cl2n`` KNN classifier: centre on the training-feature mean,
    L2-normalise, average per class, classify by squared Euclidean distance (logits = -scale d^2).
    ``distance: cosine``: cosine similarity to the raw class means, the paper's other option."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return NCMHead(dim, info.num_classes, self.cfg.scale, self.cfg.distance)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        x, y = self.features(run, "train", "cpu")
        model.head.cpu().fit(x, y)
        return self.head_summary(model, run, t0)


class OpenMaxHead(nn.Module):
    """The parent's classifier followed by OpenMax recalibration
    (:func:`longtail.methods.decoupled.openmax.openmax_probs`).

    ``forward`` returns C + 1 logits log P_j, the unknown class last, so their softmax is the
    OpenMax probabilities exactly and an argmax that picks column C (which no label has) counts as
    an error wherever accuracy is read from logits (training history, val accuracy)."""

    def __init__(self, base: nn.Module, num_classes: int, alpha: int, kind: str, euclidean_weight: float) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("means", torch.zeros(num_classes, num_classes))  # MAVs mu_j (C, C)
        self.register_buffer("weibull", torch.ones(num_classes, 2))  # [shape, scale] per class
        self.alpha, self.kind, self.euclidean_weight = alpha, kind, euclidean_weight

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """OpenMax probabilities (B, C + 1); the last column is the unknown class."""
        with torch.autocast(x.device.type, enabled=False):
            av = self.base(x.float())  # activation vectors = the parent's logits (B, C)
            return om.openmax_probs(av, self.means, self.weibull, self.alpha, self.kind, self.euclidean_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.probs(x).clamp_min(om.EPS))  # (B, C + 1)


@register_method("openmax")
class OpenMax(ClassifierStage):
    """OpenMax (Bendale & Boult, CVPR 2016, Alg. 1 and 2) on the parent's logits: per-class Weibull
    models of the tail_size largest distances of correctly classified training AVs to their MAV,
    the top alpha logits revised (alpha = 10 as the authors' release, min(alpha, C)), an unknown
    class added. A sample is rejected (pred -1) when the unknown class wins the argmax over the
    C + 1 probabilities; its confidence is 1 - P(unknown) (:meth:`predictions`), so the
    evaluator's AUROC ranks by the unknown probability and its threshold rule (reject below t)
    only adds rejections where P(unknown) > 1 - t. Choices:
    :mod:`longtail.methods.decoupled.openmax`."""

    def predictions(self, split: SplitData, logits: np.ndarray) -> pd.DataFrame:
        """Predictions from the head's C + 1 log-probabilities: pred / confidence by
        :func:`longtail.methods.decoupled.openmax.decide`, top-k over the C + 1 classes with the
        unknown ranked as -1."""
        probs = torch.softmax(torch.from_numpy(logits).float(), dim=1)  # = the OpenMax probabilities
        pred, confidence = om.decide(probs)
        top_p, top_i = probs.topk(min(5, probs.shape[1]), dim=1)
        top_i = torch.where(top_i == probs.shape[1] - 1, torch.full_like(top_i, -1), top_i)
        return predictions_frame(split, pred.numpy(), confidence.numpy(), top_i.numpy(), top_p.numpy())

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        base = create_head(self.cfg.head, dim, info.num_classes)
        return OpenMaxHead(base, info.num_classes, self.cfg.alpha, self.cfg.distance, self.cfg.euclidean_weight)

    def load_parent_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.base.load_state_dict(parent_head.state_dict())
        head.base.requires_grad_(False)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        x, y = self.features(run, "train", torch.device("cpu"))
        head = model.head.cpu()
        with torch.no_grad():
            means, weibull = om.fit_openmax(head.base(x), y, run.info.num_classes, self.cfg.tail_size,
                                            self.cfg.distance, self.cfg.euclidean_weight)
        head.means.copy_(means)
        head.weibull.copy_(weibull)
        for j, (k, lam) in enumerate(weibull.tolist()):
            print(f"class {j}: Weibull shape {k:.3f} scale {lam:.4f}", file=sys.stderr)
        return self.head_summary(model, run, t0)
