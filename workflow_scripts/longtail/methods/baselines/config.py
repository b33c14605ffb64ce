"""Configs of the re-sampling / re-weighting baselines that need more than ``plain``.

Most baselines are ``method: plain`` runs with another ``sampler`` / ``loss`` in
config; only LDAM (fixed-scale cosine logits) and the two embedding losses (range, lifted
structure) have their own method and so their own config here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import register_config
from ..config import ParamError, TrainConfig, check_positive


@register_config("ldam")
@dataclass(frozen=True)
class LDAMConfig(TrainConfig):
    """LDAM-DRW (Cao et al. 2019): cosine logits with the fixed scale s = ``cosine_scale`` (30)
    and the ``ldam`` loss (margins, DRW schedule in ``loss_params``)."""

    head: str = "cosine"
    cosine_scale: float = 30.0
    loss: str = "ldam"
    # Gradient-norm clip, applied by the trainer (0 = off). Our choice: the scale-30 cosine logits
    # give gradients ~ s / ||f|| that, with no BatchNorm under the head (LeNet), inflate the feature
    # norm ~10^4x in a few steps and freeze learning (train accuracy stuck at the head-class share).
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head != "cosine":
            raise ParamError("head", f"head must be 'cosine' for ldam (normalised logits), got '{self.head}'")
        if "scale" in self.loss_params:
            raise ParamError("loss_params.scale",
                             "loss_params.scale is not used by method ldam: set cosine_scale instead")


@register_config("range_loss")
@dataclass(frozen=True)
class RangeLossConfig(TrainConfig):
    """CE (``loss``) + ``range_weight`` * range loss on the embedding (Zhang et al. 2017, Eq. 5)."""

    range_weight: float = 0.001  # lambda of Eq. 5 (our choice: 0.01 cost 15 points of val acc on LeNet)
    range_k: int = 2  # k largest intra-class ranges (the paper's k = 2)
    range_margin: float = 10.0  # m of Eq. 4, on squared distances (our choice)
    range_alpha: float = 1.0  # weight of L_intra (Eq. 2)
    range_beta: float = 1.0  # weight of L_inter (Eq. 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("range_weight", self.range_weight, strict=False)
        check_positive("range_k", self.range_k)
        check_positive("range_margin", self.range_margin, strict=False)
        check_positive("range_alpha", self.range_alpha, strict=False)
        check_positive("range_beta", self.range_beta, strict=False)


@register_config("lifted_loss")
@dataclass(frozen=True)
class LiftedLossConfig(TrainConfig):
    """CE (``loss``) + ``lifted_weight`` * lifted structure loss on the embedding (Oh Song et al. 2016)."""

    lifted_weight: float = 0.1  # weight against CE (our choice; the paper trains the metric loss alone)
    lifted_margin: float = 1.0  # alpha of Eq. 4 (the paper's 1.0)
    lifted_normalize: bool = False  # L2-normalise embeddings first (Eq. 4 uses raw ones)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("lifted_weight", self.lifted_weight, strict=False)
        check_positive("lifted_margin", self.lifted_margin, strict=False)
