"""Frozen-backbone plumbing shared by every method that starts from a parent run (``init_from``):
the parent's backbone (architecture read from its model.pt, weights copied, frozen), its cached
features as tensors, class means, and a split of cached features that the shared trainer
iterates like a split of images, so head-only training runs through :func:`longtail.trainer.fit`
(checkpoints, resume, divergence checks) and never through a second loop.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..data import DatasetInfo, batches
from ..models import Backbone, create_backbone
from ..trainer import TrainRun


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
    backbone = create_backbone(name, info.in_channels, None)  # weights come from the parent, not torchvision
    backbone.load_state_dict(sub_state(parent["model"], "backbone."), strict=True)
    if freeze:
        backbone.requires_grad_(False)
    return backbone


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

    def iterate(self, batch_size: int, info: DatasetInfo, device: torch.device, *, order: np.ndarray | None = None,
                train: bool = False, channels_last: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
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
