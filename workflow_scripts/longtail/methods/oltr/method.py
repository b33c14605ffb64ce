"""OLTR stage 2 (Liu et al., CVPR 2019) on the shared trainer; the Fig. 5 ablations are parameter
sets of this method (component switches of :class:`~longtail.methods.oltr.config.OLTRConfig`).

Stage 1 is the run named by ``init_from`` (a ``plain`` run). Stage 2:

- model (:class:`longtail.methods.oltr.modules.OLTRNet`): the parent's backbone, attention on its last feature
  map, the dynamic meta-embedding and the squashing cosine classifier; the backbone weights are
  loaded from the parent checkpoint (``init_model``), the hallucinator T_hal from the parent's
  linear classifier (the authors load the stage-1 classifier into ``fc_hallucinator``);
- memory: the K centroids start as the class means of the parent's embeddings of the training
  set (``run.parent_features['train']``, the authors' ``centroids_cal`` on stage-1 features);
- loss (Eq. 7): CE + ``centroid_weight`` * (attract + ``repel_weight`` * repel) on v_direct;
- centroids are then updated as the authors do (``centroid_update: loss``): they are parameters
  of the centroid loss only (the meta-embedding reads them detached), stepped by SGD at
  ``lr * centroid_lr_scale`` (a param group's ``lr_scale``, applied by the trainer) with the
  class-averaged centre-loss gradient of the attract term plus the repel term's gradient.
  ``ema`` (moving class means, updated after the optimiser step) and ``fixed`` are alternatives;
- class-aware sampling, 4 images per class (the ``class_balanced`` sampler).

The feature model (backbone, its ``fc_add`` and the attention) learns at ``lr *
backbone_lr_scale`` as the authors' ``feat_model`` optimiser group; ``freeze_backbone`` fixes only
the backbone's own weights, as their ``fix`` (attention and fc_add train).

Model selection: ``select: best_val`` keeps the best validation epoch with its centroids, as the
authors' code (the OLTR presets and the default runs set it); the trainer's default is ``last``.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import torch
from torch import nn

from ... import trainer
from ...data import DatasetInfo
from ...models import create_backbone
from ...trainer import TrainBatch, TrainRun
from .. import register_method
from ..base import Method
from ..frozen import class_means, parent_tensors, sub_state
from .modules import OLTRNet, centroid_loss, ema_update, feature_map_size


@register_method("oltr")
class OLTR(Method):
    """OLTR: dynamic meta-embedding + modulated attention (Fig. 5a, last bar) with every switch on;
    the Fig. 5b / 5c ablations switch components off in ``params``."""

    requires_parent = True

    # --- model -------------------------------------------------------------------------------
    def build_model(self, info: DatasetInfo) -> OLTRNet:
        cfg = self.cfg
        # weights come from the parent; fc_add (authors' use_fc) is the parent's or a fresh one
        backbone = create_backbone(cfg.backbone, info.in_channels, None, cfg.fc_add_dim)
        map_size = None
        if cfg.attention not in ("none", "self") and cfg.spatial_attention == "positional":
            side = cfg.input_size or info.image_size
            if side <= 0:
                raise ValueError("spatial_attention 'positional' needs the input size: set input_size "
                                 "(the dataset does not record its image size)")
            map_size = feature_map_size(backbone, info.in_channels, side)
        model = OLTRNet(backbone, info.num_classes, attention=cfg.attention,
                        attention_reduction=cfg.attention_reduction, memory=cfg.memory, selector=cfg.selector,
                        reachability=cfg.reachability, reachability_scale=cfg.reachability_scale,
                        cosine_scale=cfg.cosine_scale, squash_power=cfg.squash_power,
                        spatial_attention=cfg.spatial_attention, map_size=map_size)
        model.meta.centroids.requires_grad_(cfg.centroid_update == "loss")
        if cfg.freeze_backbone:
            model.backbone.requires_grad_(False)
            fc_add = model.backbone._modules.get("fc_add")
            if fc_add is not None:
                fc_add.requires_grad_(True)
        return model

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        """Load the stage-1 backbone (strict: every backbone weight must be there) and, with
        ``hallucinator_init: parent``, the stage-1 classifier into T_hal."""
        if parent is None:
            return
        parent_backbone = (parent.get("config") or {}).get("backbone", self.cfg.backbone)
        if parent_backbone != self.cfg.backbone:
            raise ValueError(f"backbone '{self.cfg.backbone}' differs from the init_from run's '{parent_backbone}'; "
                             "set the same backbone in params")
        state = parent["model"]
        weights = sub_state(state, "backbone.")
        has_fc = "fc_add" in model.backbone._modules
        if "fc_add.weight" in weights and not has_fc:
            raise ValueError(f"the init_from run has an fc_add layer ({tuple(weights['fc_add.weight'].shape)}): "
                             "set the same fc_add_dim in params")
        # a parent without fc_add (ResNet-10 on ImageNet-LT) leaves stage 2's fc_add fresh
        self.fresh_fc_add = has_fc and "fc_add.weight" not in weights
        missing, unexpected = model.backbone.load_state_dict(weights, strict=False)
        bad = [k for k in missing if not (self.fresh_fc_add and k.startswith("fc_add."))] + list(unexpected)
        if bad:
            raise ValueError(f"the init_from run's backbone does not match (keys {bad[:4]}...)")
        w = state.get("head.weight")
        if self.cfg.hallucinator_init == "parent" and w is not None and w.shape == model.meta.hallucinator.weight.shape:
            with torch.no_grad():
                model.meta.hallucinator.weight.copy_(w)
                bias = state.get("head.bias")
                if bias is not None and bias.shape == model.meta.hallucinator.bias.shape:
                    model.meta.hallucinator.bias.copy_(bias)
                else:
                    model.meta.hallucinator.bias.zero_()

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """Three SGD groups with an ``lr_scale`` each (applied by the trainer), as the authors'
        optimisers: classifier side (T_hal, T_sel, cosine classifier) 1; feature model (backbone,
        fc_add, attention) ``backbone_lr_scale``; centroids ``centroid_lr_scale``."""
        feature_model = [model.backbone] + ([model.attention] if model.attention is not None else [])
        backbone = [p for m in feature_model for p in m.parameters() if p.requires_grad]
        centroids = [p for p in (model.meta.centroids,) if p.requires_grad]
        taken = {id(p) for p in backbone} | {id(model.meta.centroids)}
        new = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
        groups = [{"params": new, "lr_scale": 1.0},
                  {"params": backbone, "lr_scale": self.cfg.backbone_lr_scale},
                  {"params": centroids, "lr_scale": self.cfg.centroid_lr_scale}]
        return [g for g in groups if g["params"]]

    # --- training ----------------------------------------------------------------------------
    def oltr_loss(self, model: OLTRNet, out: Mapping[str, torch.Tensor], y: torch.Tensor, epoch: int,
                  loss_fn: nn.Module) -> torch.Tensor:
        """Eq. 7: CE(logits, y) + lambda * L_LM(features, centroids), L_LM in fp32."""
        cfg = self.cfg
        loss = loss_fn(out["logits"], y, epoch)
        if cfg.centroid_weight == 0:
            return loss
        feats = out["direct"] if cfg.centroid_loss_on == "direct" else out["meta"]
        c = model.meta.centroids if cfg.centroid_update == "loss" else model.meta.centroids.detach()
        with torch.autocast(device_type=feats.device.type, enabled=False):
            lm = centroid_loss(feats.float(), y, c, margin=cfg.margin, repel_weight=cfg.repel_weight)
        return loss + cfg.centroid_weight * lm

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.forward_all(batch.x)
        if self.cfg.centroid_update == "ema":
            batch.saved["direct"] = out["direct"]  # read by after_step, once backward is done
        return self.oltr_loss(model, out, batch.y, batch.epoch, batch.loss_fn), out["logits"]

    def after_step(self, model: nn.Module, batch: TrainBatch) -> None:
        """``centroid_update: ema``: moving class means of the batch's v_direct. Only after the
        step: the loss's graph saved the memory M (Eqs. 1-3 read it), so an in-place update
        before backward would silently change the gradients."""
        if self.cfg.centroid_update == "ema":
            ema_update(model.meta.centroids.data, batch.saved["direct"].detach().float(), batch.y,
                       self.cfg.centroid_momentum)

    def init_centroids(self, model: OLTRNet, run: TrainRun) -> None:
        """Memory M <- class means of the parent's training embeddings (else, or with a fresh
        fc_add, of the model's own v_direct: the authors' ``centroids_cal`` on the stage-2 feature
        model; SA starts at 0 and MA * 0 = 0, so only a fresh fc_add differs from the parent)."""
        k, dim = model.meta.centroids.shape
        fresh_fc = getattr(self, "fresh_fc_add", False)  # the parent's features are not v_direct then
        if not fresh_fc and run.parent_features is not None and "train" in run.parent_features:
            x, labels = parent_tensors(run, "train")
            if x.shape[1] != dim:
                raise ValueError(f"parent features have {x.shape[1]} dims, the backbone embeds into "
                                 f"{dim}: init_from must name a run with the same backbone")
        else:
            dev = run.device
            model.to(dev.device).eval()
            xs, ys = [], []
            with torch.no_grad():
                for idx, xb in run.train.iterate(self.cfg.eval_batch_size, run.info, dev.device,
                                                 channels_last=dev.channels_last):
                    with dev.autocast():
                        xs.append(model.direct(xb).float().cpu())
                    ys.append(run.train.labels[idx])
            x, labels = torch.cat(xs), torch.cat(ys).long()
        with torch.no_grad():
            model.meta.centroids.copy_(class_means(x, labels, k).to(model.meta.centroids.device))

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        self.init_centroids(model, run)  # a resumed run then loads its saved centroids over these
        return trainer.fit(self, model, run)

    # --- inference ---------------------------------------------------------------------------
    def infer(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding): v_meta (``embedding: meta``, the classifier's input) or v_direct."""
        out = model.forward_all(x)
        return out["logits"], out["meta"] if self.cfg.embedding == "meta" else out["direct"]

