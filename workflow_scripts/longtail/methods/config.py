"""Configs of the plain method and of every method trained end to end by the shared trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import register_config

# Names registered in longtail.models (a test keeps the two in step).
BACKBONES = (
    "lenet", "lenet5", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "vgg11",
)
HEADS = ("linear", "cosine")
SCHEDULES = ("cosine", "step", "constant")
# Names registered in longtail.samplers / longtail.losses (tests keep them in step).
SAMPLERS = ("instance", "power", "sqrt", "class_balanced", "progressive", "oversample", "undersample")
LOSSES = ("ce", "cost_sensitive", "cb_softmax", "cb_focal", "focal", "ldam", "balanced_softmax")


def check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key} '{value}' is unknown; choose one of {list(choices)}")


def check_positive(key: str, value: float, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        raise ValueError(f"{key} must be {'> 0' if strict else '>= 0'}, got {value}")


@register_config("plain")
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

    def __post_init__(self) -> None:
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
