"""The base method: a backbone + classifier trained end to end by the shared trainer.

Subclasses change behaviour through small hooks (``build_model``, ``init_model``,
``trainable_parameters``, ``fit``) and their frozen ``Config``. The optimisation step belongs to
:func:`longtail.trainer.train_step`; a method extends it only through ``training_loss`` (the
loss to backpropagate, plus any work that must precede the step, e.g. a bilevel meta-update) and
``after_step`` (work on the stepped weights, e.g. a moving-average memory update).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import trainer
from ..contracts import predictions_table
from ..data import DatasetInfo, SplitData
from ..losses import create_loss
from ..models import LongTailNet, create_backbone, create_head
from ..samplers import Sampler, create_sampler
from ..trainer import TrainBatch, TrainRun
from .config import TrainConfig


class Method:
    """Plain training; see subclasses for the rest. ``requires_parent``: the method starts from
    another run's checkpoint (named by ``init_from`` in config)."""

    name: ClassVar[str] = "?"
    Config: ClassVar[type] = TrainConfig
    requires_parent: ClassVar[bool] = False
    # False: trains on cached features, so ``augment`` resolves to none whatever the source
    trains_on_images: ClassVar[bool] = True

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # --- model -------------------------------------------------------------------------------
    def build_model(self, info: DatasetInfo) -> nn.Module:
        backbone = create_backbone(self.cfg.backbone, info.in_channels, self.cfg.weights, self.cfg.fc_add_dim)
        return LongTailNet(backbone, create_head(self.cfg.head, backbone.dim, info.num_classes,
                                                 self.cfg.cosine_scale))

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        """Load a parent run's weights (methods with ``requires_parent``)."""
        if parent is not None:
            model.load_state_dict(parent["model"], strict=False)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What SGD steps: parameters, or param-group dicts whose optional ``lr_scale`` multiplies
        the scheduled lr (the trainer applies it every step). With ``backbone_lr_scale`` != 1:
        two groups, the backbone (fc_add included) at that scale and the rest (the head) at 1."""
        scale = getattr(self.cfg, "backbone_lr_scale", 1.0)
        backbone = getattr(model, "backbone", None)
        if scale == 1.0 or backbone is None:
            return [p for p in model.parameters() if p.requires_grad]
        body = [p for p in backbone.parameters() if p.requires_grad]
        taken = {id(p) for p in body}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
        return [g for g in ({"params": rest, "lr_scale": 1.0}, {"params": body, "lr_scale": scale}) if g["params"]]

    # --- training ----------------------------------------------------------------------------
    def create_sampler(self, labels: np.ndarray) -> Sampler:
        return create_sampler(self.cfg.sampler, labels, self.cfg.epochs, **dict(self.cfg.sampler_params))

    def create_loss(self, info: DatasetInfo) -> nn.Module:
        return create_loss(self.cfg.loss, np.array(info.class_counts), self.cfg.epochs, **dict(self.cfg.loss_params))

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's extension hook: return (loss, logits) of ``batch``; the trainer then runs
        zero_grad, backward of ``loss``, clipping and the optimiser step. Runs under the
        trainer's autocast; may first do work of its own that must precede the step (a bilevel
        method's meta-update) and keep tensors in ``batch.saved`` for :meth:`after_step`."""
        logits = model(batch.x)
        return batch.loss_fn(logits, batch.y, batch.epoch), logits

    def after_step(self, model: nn.Module, batch: TrainBatch) -> None:
        """Runs after the optimiser step, without autocast or autograd (default: nothing); for
        updates that must not touch tensors the backward pass still needed."""

    def training_state(self) -> dict[str, Any]:
        """State the method keeps outside the model and its optimiser (e.g. a meta optimiser),
        saved in every checkpoint so that a resumed run continues it (default: none)."""
        return {}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`training_state` from a checkpoint."""

    def fit(self, model: nn.Module, run: "TrainRun") -> pd.DataFrame:
        """Train ``model`` in place; returns the per-epoch history. Training-free methods override."""
        return trainer.fit(self, model, run)

    # --- inference ---------------------------------------------------------------------------
    def infer(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, embedding) of a batch; the embedding is what t-SNE/KT/NCM use."""
        feats = model.features(x)
        return model.head(feats), feats

    def predictions(self, split: SplitData, logits: np.ndarray) -> pd.DataFrame:
        """The predictions table of ``split`` from this method's logits (``infer`` over the split):
        softmax top-1 and top-k. A method that rejects on its own (OpenMax) overrides it."""
        return predictions_table(split, logits)
