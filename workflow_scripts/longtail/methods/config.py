"""Configs of the plain method and of every method trained end to end by the shared trainer."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Mapping

from ..sources import AUGMENTS
from . import register_config

# Names registered in longtail.models (a test keeps the two in step).
BACKBONES = (
    "lenet", "lenet5", "lenet5_bn", "lenet5_gap", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "vgg11", "vgg11_gap",
)
HEADS = ("linear", "cosine")
SCHEDULES = ("cosine", "step", "constant")
# Names registered in longtail.samplers / longtail.losses (tests keep them in step).
SAMPLERS = ("instance", "power", "sqrt", "class_balanced", "progressive", "oversample", "undersample")
LOSSES = ("ce", "cost_sensitive", "cb_softmax", "cb_focal", "focal", "ldam", "balanced_softmax")
SELECTS = ("last", "best_val")


class ParamError(ValueError):
    """A bad value of the parameter ``key``; the message, which starts with the key, says what is
    wrong and the fix (check_config names it ``runs.<run>.params.<key>``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    @property
    def problem(self) -> str:
        """The message without its leading key."""
        msg = str(self)
        for prefix in (f"{self.key}: ", f"{self.key} "):
            if msg.startswith(prefix):
                return msg[len(prefix):]
        return msg


def yaml_repr(value: Any) -> str:
    """A value as config.yaml spells it (true, null, .nan, 'text'), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_repr(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {yaml_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ParamError(key, f"{key} '{value}' is unknown; choose one of {list(choices)}")


def check_positive(key: str, value: float, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        raise ParamError(key, f"{key} must be {'> 0' if strict else '>= 0'}, got {value}")


# ------------------------------------------------------------------ field types
# YAML happily gives 1.5, true or "ten" where an integer is meant, and bool is an int subclass:
# every config dataclass checks its fields against their annotations before any other check.

_SCALAR_NAMES = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
                 float: ("a number", "numbers"), str: ("a string", "strings")}


def _matches(tp: Any, value: Any) -> bool:
    """Whether ``value`` has type ``tp`` (strictly: bool is not an int; an int is a float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_matches(t, value) for t in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], v) for v in value)
        return len(args) == len(value) and all(map(_matches, args, value))
    if tp is Mapping or origin is collections.abc.Mapping:
        if not isinstance(value, Mapping):
            return False
        key_t, value_t = args or (Any, Any)
        return all(_matches(key_t, k) and _matches(value_t, v) for k, v in value.items())
    return True  # a type these configs do not use: left to the field's own checks


def _describe(tp: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(t, plural) for t in args)
    if tp is type(None):
        return "null"
    if tp in _SCALAR_NAMES:
        return _SCALAR_NAMES[tp][plural]
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return "lists" if plural else ("a list" if item is Any else f"a list of {_describe(item, True)}")
    return "mappings" if plural else "a mapping"


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    return False


@cache
def _field_types(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """(name, type, default) of every field; annotations are strings under postponed evaluation."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        out.append((f.name, hints[f.name], default))
    return tuple(out)


def check_field_types(cfg: Any) -> None:
    """Raise ParamError on the first field whose value does not have its annotated type or holds
    a NaN or infinity; the message gives the default as an example of a valid value."""
    for name, tp, default in _field_types(type(cfg)):
        value = getattr(cfg, name)
        example = "" if default is dataclasses.MISSING else f"; write e.g. {yaml_repr(default)} (the default)"
        if not _matches(tp, value):
            raise ParamError(name, f"{name}: expected {_describe(tp)}, got {yaml_repr(value)}{example}")
        if _non_finite(value):
            what = "a finite number" if isinstance(value, float) else "finite numbers"
            raise ParamError(name, f"{name}: expected {what}, got {yaml_repr(value)}{example}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by every trained method (SGD with momentum, as in all four papers)."""

    backbone: str = "lenet"
    weights: str | None = None  # torchvision weights name, e.g. "IMAGENET1K_V1"
    head: str = "linear"  # linear | cosine
    cosine_scale: float = 16.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    milestones: tuple[int, ...] = ()  # epochs at which "step" multiplies the lr by gamma
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up (LDAM-DRW uses 5)
    grad_clip: float = 0.0  # max global L2 norm of the gradient per step (0 = no clipping)
    sampler: str = "instance"
    sampler_params: Mapping[str, Any] = field(default_factory=dict)
    loss: str = "ce"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 1024
    # training augmentation (longtail.sources.resolve_augment): auto = the source's standard one
    # (crop_flip for CIFAR, none for Fashion-MNIST and glyphs); the run's config records the
    # resolved value
    augment: str = "auto"
    # the weights a run keeps: the last epoch's, or those of the epoch with the highest val
    # accuracy (OLTR's code; the earliest on ties)
    select: str = "last"
    # lr of the backbone (and its fc_add) = lr * backbone_lr_scale; the head trains at lr. OLTR's
    # Places-LT stage 1: pretrained ResNet-152 at 0.001, classifier at 0.1 (scale 0.01).
    backbone_lr_scale: float = 1.0
    fc_add_dim: int = 0  # > 0: an fc + ReLU after pooling to this many dims (OLTR's use_fc, fc_add)

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("augment", self.augment, AUGMENTS)
        check_choice("select", self.select, SELECTS)
        check_choice("backbone", self.backbone, BACKBONES)
        check_choice("head", self.head, HEADS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("loss", self.loss, LOSSES)
        for key in ("epochs", "batch_size", "lr", "eval_batch_size"):
            check_positive(key, getattr(self, key))
        check_positive("weight_decay", self.weight_decay, strict=False)
        check_positive("warmup_epochs", self.warmup_epochs, strict=False)
        check_positive("grad_clip", self.grad_clip, strict=False)
        check_positive("backbone_lr_scale", self.backbone_lr_scale, strict=False)
        check_positive("fc_add_dim", self.fc_add_dim, strict=False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@register_config("plain")
@dataclass(frozen=True)
class PlainConfig(TrainConfig):
    """``plain``: :class:`TrainConfig`, plus ``freeze_backbone``: train the classifier alone on
    the (pretrained) backbone's frozen features, BatchNorm statistics included (MetaModelNet
    Table 1's setting: "fine-tuning the classifier module while freezing the representation
    module")."""

    freeze_backbone: bool = False

