"""Classification losses for long-tailed training, behind one registry.

Every loss is an ``nn.Module`` built from the training class counts and called as
``loss(logits, target, epoch)`` so that schedules such as deferred re-weighting can switch on by
epoch without the trainer knowing about them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[..., "LongTailLoss"]
_LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    def deco(cls: LossFn) -> LossFn:
        _LOSSES[name] = cls
        return cls

    return deco


def available_losses() -> list[str]:
    return sorted(_LOSSES)


def create_loss(name: str, class_counts: np.ndarray, num_epochs: int = 1, **params) -> "LongTailLoss":
    if name not in _LOSSES:
        raise ValueError(f"unknown loss '{name}'; choose one of {available_losses()}")
    return _LOSSES[name](np.asarray(class_counts), num_epochs=num_epochs, **params)


class LongTailLoss(nn.Module):
    def __init__(self, class_counts: np.ndarray, num_epochs: int = 1) -> None:
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(class_counts, dtype=torch.float32))
        self.num_epochs = num_epochs

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        raise NotImplementedError


@register_loss("ce")
class CrossEntropy(LongTailLoss):
    """Plain softmax cross-entropy."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return F.cross_entropy(logits, target)
