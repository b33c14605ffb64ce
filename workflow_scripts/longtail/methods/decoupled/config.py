"""Configs of the classifier-stage methods on a frozen backbone (decoupling, Kang et al. ICLR 2020)
and of OpenMax (Bendale & Boult, CVPR 2016).

All of them start from another run (``init_from``, the ``plain`` backbone by default).
``backbone`` and ``head`` are null in config.yaml and resolved from that run when training
starts; the resolved values are what model.pt and config.yaml record. Setting them explicitly
only adds a check that the parent matches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import register_config
from ..config import BACKBONES, HEADS, ParamError, TrainConfig, check_choice, check_field_types, check_positive

DISTANCES = ("eucos", "euclidean")  # OpenMax
NCM_DISTANCES = ("euclidean", "cosine")


def _check_inherited(cfg: Any) -> None:
    """backbone / head may be null (= the parent's); pretrained weights never apply here."""
    if cfg.backbone is not None:
        check_choice("backbone", cfg.backbone, BACKBONES)
    if cfg.head is not None:
        check_choice("head", cfg.head, HEADS)
    if getattr(cfg, "weights", None) is not None:
        raise ParamError("weights",
                         "weights: a classifier-stage method takes its backbone from init_from; set weights: null")


@dataclass(frozen=True)
class HeadTrainConfig(TrainConfig):
    """A classifier trained on the parent's cached features (cRT, LWS): the SGD settings of
    :class:`TrainConfig`, class-balanced sampling with 4 images per drawn class by default."""

    backbone: str | None = None  # null: the init_from run's
    head: str | None = None  # cRT: kind of the new classifier; LWS: the parent's kind (null: the parent's)
    sampler: str = "class_balanced"
    sampler_params: Mapping[str, Any] = field(default_factory=lambda: {"per_class": 4})

    def __post_init__(self) -> None:
        check_field_types(self)
        _check_inherited(self)
        if self.augment not in ("auto", "none"):
            raise ParamError("augment", f"augment: this head trains on cached features, which cannot be "
                                        f"augmented; set none (got '{self.augment}')")
        if self.backbone is None or self.head is None:
            # check every other field with placeholder architecture values (the copy's own
            # __post_init__ takes the branch below, so this does not recurse further)
            dataclasses.replace(self, backbone=self.backbone or BACKBONES[0], head=self.head or HEADS[0])
            return
        super().__post_init__()


@register_config("crt")
@dataclass(frozen=True)
class CRTConfig(HeadTrainConfig):
    """Classifier re-training: a freshly initialised head, 10 epochs of class-balanced sampling."""

    epochs: int = 10


@register_config("lws")
@dataclass(frozen=True)
class LWSConfig(HeadTrainConfig):
    """Learnable weight scaling: only the per-class scales f_i train, 5 epochs. ``weight_decay``
    defaults to 0 because decay would pull f_i towards 0 rather than towards 1."""

    epochs: int = 5
    weight_decay: float = 0.0


@dataclass(frozen=True)
class FrozenBackboneConfig:
    """Training-free classifiers on the parent's features (tau-norm, NCM, OpenMax)."""

    backbone: str | None = None  # null: the init_from run's
    head: str | None = None  # the parent's classifier kind (null: read from the parent)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        check_field_types(self)
        _check_inherited(self)
        check_positive("eval_batch_size", self.eval_batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@register_config("tau_norm")
@dataclass(frozen=True)
class TauNormConfig(FrozenBackboneConfig):
    """tau-normalised classifier w_i / ||w_i||^tau, bias dropped. ``tau`` null: chosen on the val
    split from the grid 0, tau_step, ..., tau_max (decoupling sweeps [0, 2]); a number fixes it."""

    tau: float | None = None
    tau_step: float = 0.1
    tau_max: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("tau_step", self.tau_step)
        check_positive("tau_max", self.tau_max, strict=False)
        if self.tau is not None:
            check_positive("tau", self.tau, strict=False)
        if self.head not in (None, "linear"):
            raise ParamError("head", f"head: tau_norm rescales a linear classifier, got '{self.head}'")


@register_config("ncm")
@dataclass(frozen=True)
class NCMConfig(FrozenBackboneConfig):
    """Nearest class mean. ``distance``: euclidean (default) = decoupling's ``cl2n``: features
    centred on the training-feature mean and L2-normalised, class means of those, logits =
    -scale * squared Euclidean distance; cosine = the paper's other option, scale * cos(x, mu_j)
    with means of the raw features. ``scale`` (1 = the reference's logits) is a softmax
    temperature: it leaves the argmax unchanged and sets the confidence the open-set rejection
    reads."""

    scale: float = 1.0
    distance: str = "euclidean"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("scale", self.scale)
        check_choice("distance", self.distance, NCM_DISTANCES)


@register_config("openmax")
@dataclass(frozen=True)
class OpenMaxConfig(FrozenBackboneConfig):
    """OpenMax on the parent's logits (activation vectors). ``tail_size``: largest distances per
    class fitted by the Weibull; ``alpha``: top classes revised (min(alpha, C) is used; 10 as the
    authors' release, ``ALPHA_RANK``);
    ``distance``: eucos (euclidean_weight * ||.||_2 + cosine distance, the authors' release) or
    euclidean."""

    tail_size: int = 20
    alpha: int = 10
    distance: str = "eucos"
    euclidean_weight: float = 0.005  # the 1/200 of eucos

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("distance", self.distance, DISTANCES)
        if self.tail_size < 2:
            raise ParamError("tail_size",
                             f"tail_size must be >= 2 (a Weibull has two parameters), got {self.tail_size}")
        if self.alpha < 1:
            raise ParamError("alpha", f"alpha must be >= 1, got {self.alpha}")
        check_positive("euclidean_weight", self.euclidean_weight, strict=False)
