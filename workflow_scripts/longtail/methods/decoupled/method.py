"""Classifier-stage methods on a frozen backbone, and OpenMax.

Decoupling (Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020, Sec. 4.2): the representation of a jointly trained run (``init_from``, the plain
backbone by default) is kept and only the classifier changes:
- ``crt``: classifier re-training, a freshly initialised head trained with class-balanced sampling;
- ``lws``: learnable weight scaling, w_i <- f_i * w_i with only f_i trained (class-balanced);
- ``tau_norm``: w_i <- w_i / ||w_i||^tau with tau chosen on the val split;
- ``ncm``: nearest class mean with cosine similarity.
OpenMax (Bendale & Boult, CVPR 2016, Alg. 1-2; math in :mod:`longtail.methods.decoupled.openmax`) recalibrates
the parent's logits with per-class Weibull models and an unknown class.

All of them read the parent's cached features (``run.parent_features``, computed once by the
parent's infer job); the backbone is copied from the parent, frozen, and never runs in training.
cRT and LWS share one feature-level SGD loop (:func:`fit_head_on_features`); it reuses the
method's sampler, loss and lr schedule, has no checkpoint/resume (a few seconds of work) and no
data augmentation (features are cached, so for streamed datasets with random crops this is
cRT on the un-augmented view). The cached features must be the parent's backbone embedding, as
the shared ``Method.infer`` returns them (plain, cosine, every loss/sampler baseline). model.pt holds the full network (parent backbone + new head),
so the shared infer rule predicts with it.
"""

from __future__ import annotations

import dataclasses
import math
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
from ...data import DatasetInfo, batches
from ...models import Backbone, LongTailNet, create_backbone, create_head
from ...trainer import HISTORY_COLUMNS, DivergenceError, TrainRun, lr_at
from .. import register_method
from ..base import Method


class _Pending(Backbone):
    """Stands in for the backbone until ``init_model`` reads the parent's architecture."""

    dim = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - replaced before use
        raise RuntimeError("backbone not resolved: a classifier-stage run needs init_from")


def _sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _features(run: TrainRun, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(X (N, D) float32, labels (N,) int64) of the parent's cached ``split`` features."""
    if run.parent_features is None or split not in run.parent_features:
        raise ValueError(f"the parent's cached '{split}' features are missing (is init_from set?)")
    x, y, _ = run.parent_features[split]
    return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device), \
        torch.as_tensor(np.asarray(y), dtype=torch.int64, device=device)


def mean_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of per-class accuracies over the classes present (= top-1 on a balanced split)."""
    hit = (logits.argmax(1) == labels).float()
    accs = [hit[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(accs).mean()) if accs else float("nan")


class ClassifierStage(Method):
    """Shared plumbing: resolve the architecture from the parent, copy its backbone (frozen) and
    build this method's head (``build_head``, filled from the parent's head by ``init_head``)."""

    requires_parent = True
    uses_parent_head: ClassVar[bool] = True  # False: only the backbone is taken (cRT)

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        raise NotImplementedError

    def init_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        """Fill the new head from the parent's (default: nothing, a fresh head)."""

    def build_model(self, info: DatasetInfo) -> nn.Module:
        if self.cfg.backbone is None:  # training: init_model replaces both parts
            return LongTailNet(_Pending(), nn.Identity())
        backbone = create_backbone(self.cfg.backbone, info.in_channels, None)  # weights come from the parent
        return LongTailNet(backbone, self.build_head(backbone.dim, info))

    def _resolve(self, pcfg: Mapping[str, Any]) -> dict[str, Any]:
        """Config updates that pin the architecture to the parent's (explicit values must match)."""
        if "backbone" not in pcfg:
            raise ValueError(f"method '{self.name}' needs a parent run with a backbone in its config")
        if self.cfg.backbone not in (None, pcfg["backbone"]):
            raise ValueError(f"backbone '{self.cfg.backbone}' differs from the parent's '{pcfg['backbone']}'; "
                             "leave it null")
        p_head = pcfg.get("head")
        if self.uses_parent_head:
            if p_head not in HEADS:
                raise ValueError(f"method '{self.name}' needs a parent with a linear or cosine head, not {p_head}")
            if self.cfg.head not in (None, p_head):
                raise ValueError(f"head '{self.cfg.head}' differs from the parent's '{p_head}'; leave it null")
        elif self.cfg.head is None and p_head not in HEADS:
            raise ValueError(f"the parent's head '{p_head}' has no counterpart here; set head: linear or cosine")
        return {"backbone": pcfg["backbone"], "head": self.cfg.head or p_head}

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        if parent is None:
            raise ValueError(f"method '{self.name}' starts from a backbone run: set init_from")
        pcfg = parent["config"]
        self.cfg = dataclasses.replace(self.cfg, **self._resolve(pcfg))
        info = DatasetInfo.from_dict(parent["info"])
        backbone = create_backbone(self.cfg.backbone, info.in_channels, None)
        backbone.load_state_dict(_sub_state(parent["model"], "backbone."))
        backbone.requires_grad_(False)  # frozen: never trained, only copied
        head = self.build_head(backbone.dim, info)
        if self.uses_parent_head:
            parent_head = create_head(pcfg["head"], backbone.dim, info.num_classes)
            parent_head.load_state_dict(_sub_state(parent["model"], "head."))
            self.init_head(head, parent_head)
        model.backbone, model.head = backbone, head

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.head.parameters() if p.requires_grad]

    def _summary(self, model: nn.Module, run: TrainRun, t0: float) -> pd.DataFrame:
        """One history row for a training-free head: accuracies on the cached train/val features."""
        dev = run.device.device
        model.head.to(dev)
        with torch.no_grad():
            (xt, yt), (xv, yv) = _features(run, "train", dev), _features(run, "val", dev)
            train_acc = float((model.head(xt).argmax(1) == yt).float().mean())
            val_acc = float((model.head(xv).argmax(1) == yv).float().mean()) if len(yv) else float("nan")
        row = {"epoch": 1, "loss": math.nan, "train_acc": train_acc, "val_acc": val_acc, "lr": math.nan,
               "seconds": time.perf_counter() - t0}
        return pd.DataFrame([row], columns=list(HISTORY_COLUMNS))


def fit_head_on_features(method: Method, head: nn.Module, run: TrainRun) -> pd.DataFrame:
    """Train ``head``'s trainable parameters on the parent's cached train features.

    The method's sampler (class-balanced by default), loss, SGD settings and lr schedule apply
    exactly as in the image trainer; each epoch's order is seeded from (seed, epoch)."""
    cfg, dev = method.cfg, run.device.device
    head.to(dev)
    x, y = _features(run, "train", dev)
    xv, yv = _features(run, "val", dev)
    loss_fn = method.create_loss(run.info).to(dev)
    sampler = method.create_sampler(y.cpu().numpy())
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    torch.manual_seed(run.seed)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = sampler.indices(epoch, np.random.default_rng([run.seed, epoch]))
        n_batches = -(-len(order) // cfg.batch_size)
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        for b, idx in enumerate(batches(len(order), cfg.batch_size, order)):
            lr = lr_at(cfg, epoch, b / n_batches)
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx_t = torch.as_tensor(idx, device=dev)
            logits = head(x[idx_t])  # (B, C)
            loss = loss_fn(logits, y[idx_t], epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_v = float(loss.detach())
            if not math.isfinite(loss_v):
                raise DivergenceError(f"loss became {loss_v} at epoch {epoch + 1}; lower lr (now {lr:.4g})")
            tot_loss += loss_v * len(idx)
            tot_correct += int((logits.detach().argmax(1) == y[idx_t]).sum())
            tot_n += len(idx)
        with torch.no_grad():
            val_acc = float((head(xv).argmax(1) == yv).float().mean()) if len(yv) else float("nan")
        history.append({"epoch": epoch + 1, "loss": tot_loss / tot_n, "train_acc": tot_correct / tot_n,
                        "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}: loss {tot_loss / tot_n:.4f} train_acc {tot_correct / tot_n:.4f} "
              f"val_acc {val_acc:.4f}", file=sys.stderr)
    return pd.DataFrame(history, columns=list(HISTORY_COLUMNS))


@register_method("crt")
class CRT(ClassifierStage):
    """cRT (decoupling Sec. 4.2): re-initialise the classifier and train it alone on the frozen
    representation with class-balanced sampling (4 images per drawn class, 10 epochs). ``head``
    names the new classifier's kind (null: the parent's)."""

    uses_parent_head = False

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return create_head(self.cfg.head, dim, info.num_classes, self.cfg.cosine_scale)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        return fit_head_on_features(self, model.head, run)


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

    def init_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.base.load_state_dict(parent_head.state_dict())
        head.base.requires_grad_(False)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        return fit_head_on_features(self, model.head, run)


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

    def _resolve(self, pcfg: Mapping[str, Any]) -> dict[str, Any]:
        out = super()._resolve(pcfg)
        if out["head"] != "linear":
            raise ValueError(f"tau_norm needs a parent with a linear head, not '{out['head']}'")
        return out

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return TauNormHead(dim, info.num_classes)

    def init_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.weight.copy_(parent_head.weight.detach())

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        head = model.head
        if self.cfg.tau is not None:
            grid = np.array([self.cfg.tau])
        else:
            grid = np.round(np.arange(0.0, self.cfg.tau_max + self.cfg.tau_step / 2, self.cfg.tau_step), 10)
        x_val, y_val = _features(run, "val", torch.device("cpu"))
        tau, accs = select_tau(head.weight.cpu(), x_val, y_val, grid)
        head.tau.fill_(tau)
        for t, a in zip(grid, accs):
            print(f"tau {t:.3g}: val mean class acc {a:.4f}{'  <- chosen' if t == tau else ''}", file=sys.stderr)
        return pd.DataFrame({"tau": grid.astype(float), "val_acc": accs, "selected": grid == tau,
                             "seconds": time.perf_counter() - t0})


class CosineMeansHead(nn.Module):
    """NCM head: logits_j = scale * cos(x, mu_j), class means mu (C, D) in a buffer."""

    def __init__(self, dim: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, dim))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.means, dim=1))


def class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int, normalize_first: bool = False) -> torch.Tensor:
    """Per-class mean (C, D) of features x (N, D); optionally of the L2-normalised features."""
    x = F.normalize(x, dim=1) if normalize_first else x
    means = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(x.dtype)
    return means / counts[:, None]


@register_method("ncm")
class NCM(ClassifierStage):
    """NCM (decoupling Sec. 4.2): class means of the parent's train-split features, nearest mean by
    cosine similarity (both sides L2-normalised). logits = scale * cos; ``scale`` only sets the
    softmax confidence (see the config)."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return CosineMeansHead(dim, info.num_classes, self.cfg.scale)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        x, y = _features(run, "train", torch.device("cpu"))
        model.head.means.copy_(class_means(x, y, run.info.num_classes, self.cfg.normalize_before_mean))
        return self._summary(model, run, t0)


class OpenMaxHead(nn.Module):
    """The parent's classifier followed by OpenMax recalibration (:func:`longtail.methods.decoupled.openmax.openmax_probs`).

    ``forward`` returns C logits log(P_j + P_0 / C): the unknown probability P_0 spread uniformly
    over the known classes (:func:`longtail.methods.decoupled.openmax.known_logits`), so the evaluator's max-softmax
    confidence is max_j P_j + P_0 / C and a high unknown mass means a low confidence."""

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
        return om.known_logits(self.probs(x))


@register_method("openmax")
class OpenMax(ClassifierStage):
    """OpenMax (Bendale & Boult, CVPR 2016, Alg. 1 and 2) on the parent's logits: per-class Weibull
    models of the tail_size largest distances of correctly classified training AVs to their MAV,
    the top alpha logits revised, an unknown class added. Choices and the mapping of the unknown
    probability onto the max-softmax rejection: :mod:`longtail.methods.decoupled.openmax` and :class:`OpenMaxHead`."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        base = create_head(self.cfg.head, dim, info.num_classes)
        return OpenMaxHead(base, info.num_classes, self.cfg.alpha, self.cfg.distance, self.cfg.euclidean_weight)

    def init_head(self, head: nn.Module, parent_head: nn.Module) -> None:
        head.base.load_state_dict(parent_head.state_dict())
        head.base.requires_grad_(False)

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        x, y = _features(run, "train", torch.device("cpu"))
        head = model.head.cpu()
        with torch.no_grad():
            means, weibull = om.fit_openmax(head.base(x), y, run.info.num_classes, self.cfg.tail_size,
                                            self.cfg.distance, self.cfg.euclidean_weight)
        head.means.copy_(means)
        head.weibull.copy_(weibull)
        for j, (k, lam) in enumerate(weibull.tolist()):
            print(f"class {j}: Weibull shape {k:.3f} scale {lam:.4f}", file=sys.stderr)
        return self._summary(model, run, t0)
