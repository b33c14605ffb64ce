"""Config of OLTR (Liu et al., CVPR 2019) stage 2; its Fig. 5 ablations are parameter sets of it.

Stage 1 is the ``plain`` run named by ``init_from``. Stage 2 (this config) adds, on top of the
parent backbone, modulated attention on the last feature map (Eq. 5), the dynamic
meta-embedding (Eqs. 1-4), the squashing cosine classifier (Eq. 6) and the loss of Eq. 7.
Defaults follow the authors' ImageNet-LT stage-2 config (zhmiao/OpenLongTailRecognition-OLTR,
``config/ImageNet_LT/stage_2_meta_embedding.py``) except the epoch count, which is kept short
for the embedded CPU dataset (``config/presets/oltr_imagenet_lt.yaml`` names the paper's 60),
the centroid-loss weight (the paper's 0.1) and ``fc_add_dim`` (0: no extra fc layer; the
authors' ``use_fc`` is 512, which the ImageNet-LT / Places-LT presets set).

The ablation runs of config.yaml are ``method: oltr`` with these switches in ``params``:

=====================  ======  ========  ============  ================
run                    memory  selector  reachability  attention
=====================  ======  ========  ============  ================
``oltr_memory``        yes     no        no            none
``oltr_selector``      yes     yes       no            none
``oltr_reach``         yes     yes       yes           none
``oltr``               yes     yes       yes           modulated (Eq. 5)
``oltr_spatial_fmap``  yes     yes       yes           spatial on the feature map (Fig. 5c)
``oltr_self_att``      yes     yes       yes           self-attention map only (Fig. 5c, presets)
=====================  ======  ========  ============  ================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import register_config
from ..config import ParamError, TrainConfig, check_choice, check_positive

ATTENTIONS = ("none", "modulated", "spatial_fmap", "self")
SPATIAL_ATTENTIONS = ("positional", "content")  # MA(f): the authors' fc over positions | query-key
CENTROID_UPDATES = ("loss", "ema", "fixed")
CENTROID_LOSS_ON = ("direct", "meta")
EMBEDDINGS = ("meta", "direct")
HALLUCINATOR_INITS = ("parent", "random")


@register_config("oltr")
@dataclass(frozen=True)
class OLTRConfig(TrainConfig):
    """OLTR stage 2 (full model). ``lr`` is the learning rate of the classifier side (hallucinator,
    selector, cosine classifier: the authors' ``classifier`` network); the feature model
    (parent backbone, its ``fc_add`` and the attention) uses ``lr * backbone_lr_scale`` and the
    centroids ``lr * centroid_lr_scale`` (authors' ImageNet-LT: 0.1 / 0.01 / 0.01; Places-LT:
    0.01 / 0.0001 / 0.01)."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.1
    head: str = "cosine"  # the squashing cosine classifier of Eq. 6 (no other head is used)
    cosine_scale: float = 16.0  # fixed logit scale of the authors' CosNorm_Classifier
    sampler: str = "class_balanced"  # class-aware sampling, 4 images per drawn class (authors)
    sampler_params: Mapping[str, Any] = field(default_factory=lambda: {"per_class": 4})
    # --- components (Fig. 5 ablations) ---
    memory: bool = True  # v_memory = o^T M (Eq. 1)
    selector: bool = True  # e = tanh(T_sel(v_direct)) (Eq. 4); off: e = 1
    reachability: bool = True  # scale by reachability_scale / gamma (Eqs. 2-3); off: scale 1
    attention: str = "modulated"  # none | modulated (Eq. 5) | spatial_fmap | self (SA only)
    attention_reduction: int = 2  # channels of the non-local block's theta/phi/g = C / reduction
    # MA(f): positional = the authors' fc over the flattened map (C*H*W -> H*W), softmax over
    # positions; content = a query-key attention over the positions (any map size)
    spatial_attention: str = "positional"
    input_size: int = 0  # input side the positional MA is sized for; 0 = the dataset's image size
    # --- dynamic meta-embedding ---
    reachability_scale: float = 10.0  # authors' code: confidence = 10 / min_i ||v - c_i||
    squash_power: int = 1  # Eq. 6: ||v||^p / (1 + ||v||^p) * v / ||v||; p = 1 authors' code, p = 2 as printed
    hallucinator_init: str = "parent"  # parent: stage-1 linear classifier weights (authors); random
    embedding: str = "meta"  # what ``infer`` returns as the embedding (features parquet, t-SNE)
    # --- loss of Eq. 7 ---
    centroid_weight: float = 0.1  # lambda of Eq. 7: the paper's 0.1; the authors' code uses 0.01 (the
    # ImageNet-LT / Places-LT presets pin 0.01 to reproduce their released numbers)
    repel_weight: float = 0.01  # L_LM = attract + repel_weight * repel (authors' code)
    margin: float = 10.0  # repel = max(0, margin - mean squared distance to other centroids)
    centroid_loss_on: str = "direct"  # direct (authors' code) | meta (Eq. 7 as printed)
    # --- centroids (memory M) ---
    centroid_update: str = "loss"  # loss: SGD on L_LM, center-loss averaged gradient (authors); ema; fixed
    centroid_momentum: float = 0.9  # ema only: c <- m c + (1 - m) batch class mean
    backbone_lr_scale: float = 0.1  # authors' ImageNet-LT: feature model lr 0.01 vs classifier 0.1
    centroid_lr_scale: float = 0.1  # authors' ImageNet-LT: centroid (criterion) lr 0.01 vs classifier 0.1
    # Fig. 8a / Places-LT: the backbone's weights fixed in stage 2; the attention and fc_add still
    # train at the feature-model lr (the authors' ``fix`` spares 'modulatedatt' and 'fc' weights)
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head != "cosine":
            raise ParamError("head",
                             f"head must be 'cosine' for OLTR (squashing cosine classifier, Eq. 6), got '{self.head}'")
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("spatial_attention", self.spatial_attention, SPATIAL_ATTENTIONS)
        check_positive("input_size", self.input_size, strict=False)
        check_choice("centroid_update", self.centroid_update, CENTROID_UPDATES)
        check_choice("centroid_loss_on", self.centroid_loss_on, CENTROID_LOSS_ON)
        check_choice("embedding", self.embedding, EMBEDDINGS)
        check_choice("hallucinator_init", self.hallucinator_init, HALLUCINATOR_INITS)
        if self.squash_power not in (1, 2):
            raise ParamError("squash_power",
                             f"squash_power must be 1 (authors' code) or 2 (paper Eq. 6), got {self.squash_power}")
        if self.selector and not self.memory:
            raise ValueError("selector needs memory: the concept selector gates the memory feature (Eq. 2)")
        for key in ("reachability_scale", "cosine_scale", "attention_reduction"):
            check_positive(key, getattr(self, key))
        for key in ("centroid_weight", "repel_weight", "margin", "backbone_lr_scale", "centroid_lr_scale"):
            check_positive(key, getattr(self, key), strict=False)
        if not 0 <= self.centroid_momentum < 1:
            raise ParamError("centroid_momentum", f"centroid_momentum must be in [0, 1), got {self.centroid_momentum}")

