"""Configs of compositional knowledge transfer (KT, Parisot et al. CVPR 2022) and of its
"few-shot excluded" backbone (Table 2).

The KT methods are training-free: they start from a cosine-classifier backbone run (``init_from``)
and only read its classifier weights and cached training features. ``backbone`` is resolved from
that parent run when the KT run is built (leave it null in config).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from .. import register_config
from ..config import TrainConfig, check_choice, check_positive

ATTENTION_DIRECTIONS = ("p->w", "w->p", "w->w", "p->p")  # Table 6; "p->w" is Eqs. 4-6
APPLY_TO = ("all", "tail")


@register_config("plain_masked")
@dataclass(frozen=True)
class MaskedTrainConfig(TrainConfig):
    """Plain training that never sees some classes (KT Table 2, "few-shot excluded" backbone).

    Classes with fewer than ``exclude_fewer_than`` training images, plus ``exclude_labels``, are
    dropped from the training sampler and their logits are masked out of the loss and of
    predictions, so their classifier rows keep their initial values and are never used.
    The paper removes the few-shot classes (n <= 20 on ImageNet-LT); with this workflow's
    strict convention (few: n < shots.few) set ``exclude_fewer_than`` to ``shots.few``."""

    exclude_fewer_than: int = 0
    exclude_labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("exclude_fewer_than", self.exclude_fewer_than, strict=False)
        if any(int(c) < 0 for c in self.exclude_labels):
            raise ValueError(f"exclude_labels must be class indices >= 0, got {list(self.exclude_labels)}")


def excluded_classes(parent_config: dict, counts: Sequence[int]) -> list[int]:
    """Classes a (masked) backbone never saw in training: [] for any other run's config."""
    below = int(parent_config.get("exclude_fewer_than", 0) or 0)
    labels = {int(c) for c in parent_config.get("exclude_labels", ()) or ()}
    return sorted(labels | {i for i, n in enumerate(counts) if n < below})


@dataclass(frozen=True)
class KTBaseConfig:
    """Shared by every KT classifier. ``backbone``: resolved from the parent run (null in config).
    ``scale``: cosine scale s of the new head; null = the parent's learned scale (16 for a
    dot-product parent, whose head has none)."""

    backbone: str | None = None
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None:
            check_positive("scale", self.scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def members(self) -> int:
        """Classifiers held by the head (ensemble members); 1 for a single classifier."""
        return 1


register_config("kt_prototypes")(KTBaseConfig)  # Table 1 "Prototypes": p_i as cosine classifier
register_config("kt_proto_classifier")(KTBaseConfig)  # Table 1 "Prototypes + classifier": p/|p| + w/|w|


@dataclass(frozen=True)
class _TransferConfig(KTBaseConfig):
    """tau: attention temperature (Eq. 5; the paper's 10). attention: direction of Table 6.
    apply_to: "all" gives every class w_h(k) (Eq. 7 as written; our default), "tail" only the
    classes with n <= k (the others keep w_i)."""

    tau: float = 10.0
    attention: str = "p->w"
    apply_to: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("tau", self.tau)
        check_choice("attention", self.attention, ATTENTION_DIRECTIONS)
        check_choice("apply_to", self.apply_to, APPLY_TO)


@register_config("kt_wh")
@dataclass(frozen=True)
class KTWhConfig(_TransferConfig):
    """w_h(k) (Eq. 7) for one threshold k: knowledge comes from classes with n > k (Eq. 6)."""

    k: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("k", self.k, strict=False)


@register_config("kt_ensemble")
@dataclass(frozen=True)
class KTEnsembleConfig(_TransferConfig):
    """Eq. 8: the mean of the softmax predictions of w_h(k) for each k in ``ks`` (the paper's
    {0, 20, 100} on ImageNet-LT: one member per shot group)."""

    ks: tuple[int, ...] = (0, 20, 100)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ks:
            raise ValueError("ks must list at least one threshold k")
        for k in self.ks:
            check_positive("ks", k, strict=False)

    @property
    def members(self) -> int:
        return len(self.ks)


@register_config("kt_continual")
@dataclass(frozen=True)
class KTContinualConfig(KTEnsembleConfig):
    """Continual mode (Eq. 9): w_hc(k) = w_kt/|w_kt| + p/|p| without the class's own w_i, for each k
    in ``ks``, averaged as in Eq. 8. ``include_prototypes`` adds the prototype classifier as a
    member (Table 2's "ensemble(prototypes, w_hc(20), w_hc(100))")."""

    ks: tuple[int, ...] = (20, 100)
    include_prototypes: bool = True

    @property
    def members(self) -> int:
        return len(self.ks) + int(self.include_prototypes)
