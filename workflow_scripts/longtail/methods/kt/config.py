"""Configs of compositional knowledge transfer (KT, Parisot et al. CVPR 2022) and of its
"few-shot excluded" backbone (Table 2).

KT is training-free: it starts from a cosine-classifier backbone run (``init_from``) and only
reads its classifier weights and cached training features. ``backbone`` is resolved from that
parent run when the KT run is built (leave it null in config). Table 1's rows are one method
with the ``classifier`` parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from .. import register_config
from ..config import ParamError, TrainConfig, check_choice, check_field_types, check_positive

ATTENTION_DIRECTIONS = ("p->w", "w->p", "w->w", "p->p")  # Table 6; "p->w" is Eqs. 4-6
APPLY_TO = ("all", "tail")


@register_config("plain_masked")
@dataclass(frozen=True)
class MaskedTrainConfig(TrainConfig):
    """Plain training that never sees some classes (KT Table 2, "few-shot excluded" backbone).

    Classes with at most ``exclude_at_most`` training images (the paper's few-shot classes,
    n <= 20: ``exclude_at_most: 20``), or with fewer than ``exclude_fewer_than`` (the strict
    convention's few-shot group, n < shots.few), plus ``exclude_labels``, are dropped from the
    training sampler and their logits are masked out of the loss and of predictions, so their
    classifier rows keep their initial values and are never used."""

    exclude_at_most: int = 0
    exclude_fewer_than: int = 0
    exclude_labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("exclude_at_most", self.exclude_at_most, strict=False)
        check_positive("exclude_fewer_than", self.exclude_fewer_than, strict=False)
        if any(int(c) < 0 for c in self.exclude_labels):
            raise ParamError("exclude_labels",
                             f"exclude_labels must be class indices >= 0, got {list(self.exclude_labels)}")


def excluded_classes(parent_config: dict, counts: Sequence[int]) -> list[int]:
    """Classes a (masked) backbone never saw in training: [] for any other run's config."""
    below = int(parent_config.get("exclude_fewer_than", 0) or 0)
    at_most = int(parent_config.get("exclude_at_most", 0) or 0)
    labels = {int(c) for c in parent_config.get("exclude_labels", ()) or ()}
    return sorted(labels | {i for i, n in enumerate(counts) if n < below or n <= at_most})


# Parameters each classifier reads (null in config: the default below); the others must stay
# null, so a parameter meant for another classifier is refused rather than ignored.
CLASSIFIER_PARAMS = {
    "prototypes": (),  # Table 1 "Prototypes": p_i as cosine classifier weights (Eq. 3)
    "proto_classifier": (),  # Table 1 "Prototypes + classifier": p_i/|p_i| + w_i/|w_i|
    "wh": ("tau", "attention", "apply_to", "k"),  # Table 1 "w_h(k)": Eqs. 4-7 for one k
    "ensemble": ("tau", "attention", "apply_to", "ks"),  # Eq. 8: softmax average of w_h(k) over ks
    "continual": ("tau", "attention", "apply_to", "ks", "include_prototypes"),  # Eq. 9, Table 2
}
CLASSIFIERS = tuple(CLASSIFIER_PARAMS)
DEFAULTS = {
    "tau": 10.0,  # Eq. 5's temperature (Sec. 4.1)
    "attention": "p->w",  # Eqs. 4-6
    "apply_to": "all",  # Eq. 7 as written
    "k": 20,  # one threshold: the few-shot bound of ImageNet-LT
    "include_prototypes": True,  # Table 2's "ensemble(prototypes, w_hc(20), w_hc(100))"
}
DEFAULT_KS = {"ensemble": (0, 20, 100), "continual": (20, 100)}  # one member per shot group / Table 2


@register_config("kt")
@dataclass(frozen=True)
class KTConfig:
    """A training-free KT classifier on the parent's frozen backbone.

    ``classifier``: prototypes | proto_classifier | wh | ensemble (Eq. 8, the full method) |
    continual (Eq. 9). ``backbone``: resolved from the parent run (null in config). ``scale``:
    cosine scale s of the new head; null = the parent's learned scale (16 for a dot-product
    parent, whose head has none). The transfer classifiers (wh, ensemble, continual) read
    ``tau`` (attention temperature, Eq. 5), ``attention`` (direction of Table 6) and
    ``apply_to`` ("all" gives every class w_h(k), Eq. 7 as written; "tail" only the classes with
    n <= k, the others keep w_i). wh reads one threshold ``k`` (knowledge from classes with
    n > k, Eq. 6); ensemble and continual a list ``ks`` (one member w_h(k) / w_hc(k) per k);
    continual's ``include_prototypes`` adds the prototype classifier as a member. A null
    parameter takes the classifier's default; one the classifier does not read must stay null.
    """

    classifier: str = "ensemble"
    backbone: str | None = None
    scale: float | None = None
    tau: float | None = None
    attention: str | None = None
    apply_to: str | None = None
    k: int | None = None
    ks: tuple[int, ...] | None = None
    include_prototypes: bool | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("classifier", self.classifier, CLASSIFIERS)
        used = CLASSIFIER_PARAMS[self.classifier]
        for key in ("tau", "attention", "apply_to", "k", "ks", "include_prototypes"):
            if key not in used:
                if getattr(self, key) is not None:
                    raise ParamError(key, f"{key}: classifier '{self.classifier}' does not read it; "
                                          f"it reads {list(used) or 'none'}")
            elif getattr(self, key) is None:  # the default, resolved here so model.pt records it
                object.__setattr__(self, key, DEFAULT_KS[self.classifier] if key == "ks" else DEFAULTS[key])
        if self.scale is not None:
            check_positive("scale", self.scale)
        if self.tau is not None:
            check_positive("tau", self.tau)
        if self.attention is not None:
            check_choice("attention", self.attention, ATTENTION_DIRECTIONS)
        if self.apply_to is not None:
            check_choice("apply_to", self.apply_to, APPLY_TO)
        if self.k is not None:
            check_positive("k", self.k, strict=False)
        if self.ks is not None:
            if not self.ks:
                raise ParamError("ks", "ks must list at least one threshold k")
            for k in self.ks:
                check_positive("ks", k, strict=False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def members(self) -> int:
        """Classifiers held by the head (ensemble members); 1 for a single classifier."""
        if self.classifier == "ensemble":
            return len(self.ks)
        if self.classifier == "continual":
            return len(self.ks) + int(self.include_prototypes)
        return 1
