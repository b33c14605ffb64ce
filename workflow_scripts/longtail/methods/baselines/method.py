"""Baselines that need more than ``plain`` with another sampler / loss: LDAM-DRW (fixed-scale
cosine logits) and the embedding losses of OLTR's comparison rows."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data import DatasetInfo
from ...losses import create_loss, lifted_structure_loss, range_loss
from ...models import CosineClassifier, LongTailNet, create_backbone
from ...trainer import TrainBatch
from .. import register_method
from ..base import Method


@register_method("ldam")
class LDAM(Method):
    """LDAM-DRW (Cao et al., NeurIPS 2019): the paper normalises features and classifier weights
    and scales the cosines by s = 30 (Sec. 3.2 / Eq. 13), so the head is a cosine classifier with a
    *fixed* scale ``cosine_scale`` and the ``ldam`` loss subtracts s * Delta_y from the true logit.
    DRW (class-balanced weights from ``loss_params.drw_epoch``) lives in the loss; the trainer
    clips the gradient norm at ``grad_clip`` (see :class:`~longtail.methods.baselines.config.LDAMConfig`)."""

    def build_model(self, info: DatasetInfo) -> nn.Module:
        backbone = create_backbone(self.cfg.backbone, info.in_channels, self.cfg.weights, self.cfg.fc_add_dim)
        head = CosineClassifier(backbone.dim, info.num_classes, self.cfg.cosine_scale, learn_scale=False)
        return LongTailNet(backbone, head)

    def create_loss(self, info: DatasetInfo) -> nn.Module:
        params = dict(self.cfg.loss_params)
        if self.cfg.loss == "ldam":
            params["scale"] = self.cfg.cosine_scale
        return create_loss(self.cfg.loss, np.array(info.class_counts), self.cfg.epochs, **params)


class _EmbeddingLossMethod(Method):
    """Joint training with ``loss`` (CE by default) on the logits + weight * a metric loss on
    the embedding ``model.features(x)`` of the same batch."""

    def metric_loss(self, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        emb = model.features(batch.x)  # (B, D)
        logits = model.head(emb)
        return batch.loss_fn(logits, batch.y, batch.epoch) + self.metric_loss(emb, batch.y), logits


@register_method("range_loss")
class RangeLoss(_EmbeddingLossMethod):
    """Softmax CE + lambda * range loss (Zhang et al., "Range Loss for Deep Face Recognition with
    Long-Tailed Training Data", ICCV 2017, Eq. 5); OLTR Table 3's "Range Loss" row."""

    def metric_loss(self, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return c.range_weight * range_loss(emb, y, c.range_k, c.range_margin, c.range_alpha, c.range_beta)


@register_method("lifted_loss")
class LiftedLoss(_EmbeddingLossMethod):
    """Softmax CE + weight * lifted structured embedding loss (Oh Song et al., "Deep Metric
    Learning via Lifted Structured Feature Embedding", CVPR 2016, Eq. 4); OLTR Table 3's
    "Lifted Loss" row. Choice: combined with CE so the same classifier head predicts."""

    def metric_loss(self, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.lifted_normalize:
            emb = F.normalize(emb.float(), dim=1)
        return self.cfg.lifted_weight * lifted_structure_loss(emb, y, self.cfg.lifted_margin)


@register_method("plain")
class Plain(Method):
    """Joint training of backbone and linear classifier; every other trained baseline is this
    class with another sampler / loss / head in its config. ``freeze_backbone``: only the head
    trains; the backbone stays in eval mode (no BatchNorm statistics update) and runs without
    gradients."""

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if getattr(self.cfg, "freeze_backbone", False):
            return [p for p in model.head.parameters() if p.requires_grad]
        return super().trainable_parameters(model)

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if not getattr(self.cfg, "freeze_backbone", False):
            return super().training_loss(model, batch)
        model.backbone.eval()  # the trainer set train mode: keep the frozen BN statistics
        with torch.no_grad():
            feats = model.backbone(batch.x)
        logits = model.head(feats)
        return batch.loss_fn(logits, batch.y, batch.epoch), logits
