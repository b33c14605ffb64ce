"""Frozen-backbone methods: everything that starts from a parent run (``init_from``) and works on
its backbone without training it.

Primitives: the parent's backbone (architecture read from its model.pt, weights copied, frozen),
its cached features as tensors, class means, and a split of cached features that the shared
trainer iterates like a split of images. :class:`FrozenBackboneMethod` puts them together: the
model is the parent's backbone plus this method's head, and a trained head runs through
:func:`longtail.trainer.fit` on cached features (checkpoints, resume, lr schedule, divergence
checks), never through a second loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import trainer
from ..data import DatasetInfo, batches
from ..models import Backbone, LongTailNet, create_backbone, create_head
from ..trainer import HISTORY_COLUMNS, TrainRun
from .base import Method


class PendingBackbone(Backbone):
    """Stands in for the backbone until ``init_model`` reads the parent's architecture
    (``build_model`` runs before the parent is known)."""

    dim = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - replaced before use
        raise RuntimeError("backbone not resolved: this method starts from another run, set init_from")


def sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix`` (``"backbone."``, ``"head."``), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def parent_backbone_name(parent: Mapping, requested: str | None, method: str) -> str:
    """The parent's backbone name; an explicitly requested one must equal it."""
    pcfg = parent.get("config") or {}
    if "backbone" not in pcfg:
        raise ValueError(f"method '{method}' needs a parent run with a backbone in its config")
    if requested not in (None, pcfg["backbone"]):
        raise ValueError(f"backbone '{requested}' differs from the parent's '{pcfg['backbone']}'; leave it null")
    return pcfg["backbone"]


def parent_backbone(parent: Mapping, name: str, freeze: bool = True) -> Backbone:
    """The parent's backbone ``name`` with its weights (strict: every weight must be there)."""
    info = DatasetInfo.from_dict(parent["info"])
    state = sub_state(parent["model"], "backbone.")
    if "fc_add.weight" in state:  # model.pt of this method is rebuilt from its config alone
        raise ValueError("the init_from run has an fc_add layer (fc_add_dim > 0), which frozen-backbone "
                         "methods do not rebuild: train that run without fc_add_dim")
    backbone = create_backbone(name, info.in_channels, None)  # weights come from the parent, not torchvision
    backbone.load_state_dict(state, strict=True)
    if freeze:
        backbone.requires_grad_(False)
    return backbone


def parent_head(parent: Mapping, kind: str) -> nn.Module:
    """The parent's classifier head of ``kind`` (linear | cosine) with its weights; sizes read
    from its ``head.weight`` (C, D)."""
    state = sub_state(parent["model"], "head.")
    num_classes, dim = state["weight"].shape
    head = create_head(kind, dim, num_classes)
    head.load_state_dict(state)
    return head


def parent_tensors(run: TrainRun, split: str, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(X (N, D) float32, labels (N,) int64) of the parent's cached ``split`` features."""
    if run.parent_features is None or split not in run.parent_features:
        raise ValueError(f"the parent's cached '{split}' features are missing (is init_from set?)")
    x, y, _ = run.parent_features[split]
    return (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(y), dtype=torch.int64, device=device))


def class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int, normalize_first: bool = False) -> torch.Tensor:
    """Per-class mean (C, D) of features x (N, D) (zeros for a class without samples);
    optionally of the L2-normalised features."""
    x = torch.nn.functional.normalize(x, dim=1) if normalize_first else x
    means = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(x.dtype)
    return means / counts[:, None]


class FeatureSplit:
    """Cached features of one split with the interface of :class:`longtail.data.SplitData` that
    the trainer uses (``labels``, ``len``, ``iterate``): batches are rows of X, already on the
    device; no augmentation (features are cached) and no merging of a last one-sample batch
    (heads have no BatchNorm)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, split: str) -> None:
        self.x = x
        self.labels = labels.cpu()
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def resolve_augment(self, augment: str) -> str:
        """Cached features take no augmentation (HeadTrainConfig allows only auto / none)."""
        return "none"

    def iterate(self, batch_size: int, info: DatasetInfo, device: torch.device, *, order: np.ndarray | None = None,
                train: bool = False, channels_last: bool = False,
                augment: Any = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        x = self.x.to(device)
        for idx in batches(len(self), batch_size, order):
            yield idx, x[torch.as_tensor(idx, device=device)]


class HeadOnly(nn.Module):
    """A head seen as a network on features (``features`` is the identity), so the trainer and
    ``Method.infer`` run it on cached features."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class FrozenBackboneMethod(Method):
    """A method on the frozen backbone of its parent run: the parent's backbone (``backbone``
    null in config: the parent's; set: must match) plus this method's head.

    Hooks: ``build_head`` (the head on D-dim features), ``resolve`` (config fields pinned to the
    parent, default the backbone), ``init_head`` (fill the head from the parent; default: a
    fresh head). ``build_model`` without a resolved backbone returns a placeholder that
    ``init_model`` replaces (training); with one (the saved config at inference) it builds both
    parts for model.pt to load into.

    ``fit`` trains the head's trainable parameters with the shared trainer on the parent's
    cached train/val features (:meth:`feature_run`, :class:`HeadOnly`), so the method's sampler,
    loss, SGD settings, lr schedule and checkpoint/resume all apply; features are cached, so
    there is no augmentation. Training-free methods override ``fit`` and read :meth:`features`.
    """

    requires_parent = True
    trains_on_images = False

    # --- hooks -------------------------------------------------------------------------------
    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        raise NotImplementedError

    def resolve(self, parent: Mapping) -> dict[str, Any]:
        """Config updates that pin the architecture to the parent's."""
        return {"backbone": parent_backbone_name(parent, self.cfg.backbone, self.name)}

    def init_head(self, head: nn.Module, parent: Mapping, info: DatasetInfo) -> None:
        """Fill the new head from the parent (default: nothing, a fresh head)."""

    # --- model -------------------------------------------------------------------------------
    def build_model(self, info: DatasetInfo) -> nn.Module:
        if self.cfg.backbone is None:  # training: init_model builds both parts from the parent
            return LongTailNet(PendingBackbone(), nn.Identity())
        backbone = create_backbone(self.cfg.backbone, info.in_channels, None)  # weights come from model.pt
        return LongTailNet(backbone, self.build_head(backbone.dim, info))

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        if parent is None:
            raise ValueError(f"method '{self.name}' starts from a backbone run: set init_from")
        self.cfg = dataclasses.replace(self.cfg, **self.resolve(parent))
        info = DatasetInfo.from_dict(parent["info"])
        # backbone before head: a fresh head's initial weights follow from the seed in this order
        backbone = parent_backbone(parent, self.cfg.backbone)
        head = self.build_head(backbone.dim, info)
        self.init_head(head, parent, info)
        model.backbone, model.head = backbone, head

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The head's trainable parameters (``model``: the network or the trainer's HeadOnly)."""
        return [p for p in model.head.parameters() if p.requires_grad]

    # --- cached features ---------------------------------------------------------------------
    def features(self, run: TrainRun, split: str, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(X (N, D), labels (N,)) of the parent's cached ``split`` features (default: on the
        run's device)."""
        return parent_tensors(run, split, run.device.device if device is None else device)

    def feature_run(self, run: TrainRun) -> TrainRun:
        """``run`` with its train/val splits replaced by the parent's cached features."""
        return dataclasses.replace(run, train=FeatureSplit(*self.features(run, "train"), "train"),
                                   val=FeatureSplit(*self.features(run, "val"), "val"), meta=None)

    # --- training ----------------------------------------------------------------------------
    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        """Train the head on cached features through the shared trainer (in place: ``model.head``
        is the module HeadOnly wraps)."""
        return trainer.fit(self, HeadOnly(model.head), self.feature_run(run))

    def head_summary(self, model: nn.Module, run: TrainRun, t0: float) -> pd.DataFrame:
        """One history row for a head fitted without training: its accuracies on the cached
        train/val features."""
        dev = run.device.device
        model.head.to(dev)
        with torch.no_grad():
            (xt, yt), (xv, yv) = self.features(run, "train"), self.features(run, "val")
            train_acc = float((model.head(xt).argmax(1) == yt).float().mean())
            val_acc = float((model.head(xv).argmax(1) == yv).float().mean()) if len(yv) else float("nan")
        row = {"epoch": 1, "loss": math.nan, "train_acc": train_acc, "val_acc": val_acc, "lr": math.nan,
               "seconds": time.perf_counter() - t0, "selected": True}
        return pd.DataFrame([row], columns=list(HISTORY_COLUMNS))
