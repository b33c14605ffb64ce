"""The base method: a backbone + classifier trained end to end by the shared trainer.

Subclasses change behaviour through small hooks (``build_model``, ``init_model``,
``trainable_parameters``, ``training_loss``, ``fit``) and their frozen ``Config``; none copies
the training loop.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import trainer
from .config import TrainConfig
from ..data import DatasetInfo
from ..losses import create_loss
from ..models import LongTailNet, create_backbone, create_head
from ..samplers import Sampler, create_sampler
from ..trainer import TrainRun


class Method:
    """Plain training; see subclasses for the rest. ``requires_parent``: the method starts from
    another run's checkpoint (named by ``init_from`` in config)."""

    name: ClassVar[str] = "?"
    Config: ClassVar[type] = TrainConfig
    requires_parent: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # --- model -------------------------------------------------------------------------------
    def build_model(self, info: DatasetInfo) -> nn.Module:
        backbone = create_backbone(self.cfg.backbone, info.in_channels, self.cfg.weights)
        return LongTailNet(backbone, create_head(self.cfg.head, backbone.dim, info.num_classes,
                                                 self.cfg.cosine_scale))

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        """Load a parent run's weights (methods with ``requires_parent``)."""
        if parent is not None:
            model.load_state_dict(parent["model"], strict=False)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    # --- training ----------------------------------------------------------------------------
    def create_sampler(self, labels: np.ndarray) -> Sampler:
        return create_sampler(self.cfg.sampler, labels, self.cfg.epochs, **dict(self.cfg.sampler_params))

    def create_loss(self, info: DatasetInfo) -> nn.Module:
        return create_loss(self.cfg.loss, np.array(info.class_counts), self.cfg.epochs, **dict(self.cfg.loss_params))

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int,
                      loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss, logits) for one batch."""
        logits = model(x)
        return loss_fn(logits, y, epoch), logits

    def fit(self, model: nn.Module, run: "TrainRun") -> pd.DataFrame:
        """Train ``model`` in place; returns the per-epoch history. Training-free methods override."""
        return trainer.fit(self, model, run)

    # --- inference ---------------------------------------------------------------------------
    def infer(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, embedding) of a batch; the embedding is what t-SNE/KT/NCM use."""
        feats = model.features(x)
        return model.head(feats), feats
