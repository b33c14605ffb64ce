"""Config of MetaModelNet (Wang, Ramanan & Hebert, NIPS 2017); its Table 2 ablations are values
of ``split``.

It starts from another run (``init_from``, the plain backbone) and works on its cached
features; ``backbone`` is null (= the parent's) and resolved when training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import register_config
from ..config import BACKBONES, ParamError, check_choice, check_field_types, check_positive

SPLITS = ("recur", "fix", "regression")
TARGETS = ("refit", "backbone_head")


@dataclass(frozen=True)
class MetaModelNetConfig:
    """MetaModelNet on a frozen backbone. Paper-scale bank: ``subsets: [1000, 765, 585, 447, 342,
    262, 200]`` (S = 1000 for k = 1 down to 200 for k = 64, log-interpolated); the default is scaled
    down for CPU. ``split``: recur (the full method, Table 2 "Recur Split"), fix (Table 2
    "MetaModelNet + Fix Split": the same chain and order, one head/tail threshold for all blocks)
    or regression (Table 2 "Model Regression [21]": one non-residual MLP theta_k -> theta* for
    every k, no recursion). ``apply_metanet: false`` is the classifier alone: the final classifier
    is theta* for every class (no bank, no meta-network), which isolates what the meta-network
    adds. ``targets``: theta* refitted by the base learner on all of a class's images (refit) or
    the parent backbone's own trained linear head, moved into the standardised parameter space
    (backbone_head)."""

    backbone: str | None = None  # null: the init_from run's
    split: str = "recur"
    apply_metanet: bool = True  # false: the classifier alone (theta* for every class)
    targets: str = "refit"  # refit | backbone_head: where the many-shot models theta* come from
    num_blocks: int = 7  # N + 1 blocks for k = 1, 2, ..., 2^N (paper: 1..64)
    subsets: tuple[int, ...] = (24, 24, 20, 20, 16, 16, 16)  # S per k = 2^i (the last repeats)
    head_threshold: int | None = None  # fix/regression: head = n > this; null: 2^num_blocks
    # classes with n <= this get F(theta); null: 2^num_blocks (recur) / head_threshold (fix, regression)
    tail_threshold: int | None = None
    # base learner (one-vs-rest logistic regression on standardised features, see longtail.metamodelnet)
    l2: float = 0.01
    negatives_per_class: int = 32
    max_negatives: int = 4096
    solver_iters: int = 100
    solver_tol: float = 1e-4
    # meta-network
    hidden: int | None = None  # width inside a block (null: D + 1)
    block_depth: int = 1  # BN -> leaky ReLU -> FC units per residual block (Fig. 2b: 1)
    regressor_depth: int = 2  # model_regression's MLP depth
    leaky_slope: float = 0.1
    steps: int = 120  # Adam steps per stage
    batch: int = 256
    lr: float = 1e-3
    finetune_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    task_weight: float = 1.0  # lambda of Eq. 1
    task_per_class: int = 64  # images per head class in the task loss (class-balanced subsample)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.backbone is not None:
            check_choice("backbone", self.backbone, BACKBONES)
        check_choice("split", self.split, SPLITS)
        check_choice("targets", self.targets, TARGETS)
        for key in ("num_blocks", "negatives_per_class", "max_negatives", "solver_iters", "block_depth",
                    "regressor_depth", "steps", "batch", "lr", "task_per_class", "eval_batch_size", "solver_tol"):
            check_positive(key, getattr(self, key))
        for key in ("l2", "weight_decay", "task_weight", "finetune_lr_scale", "leaky_slope"):
            check_positive(key, getattr(self, key), strict=False)
        if not self.subsets or any(int(s) < 1 for s in self.subsets):
            raise ParamError("subsets",
                             f"subsets must be a non-empty list of positive counts, got {list(self.subsets)}")
        for key in ("head_threshold", "tail_threshold", "hidden"):
            v = getattr(self, key)
            if v is not None:
                check_positive(key, v)
        if self.regressor_depth < 2 and self.split == "regression":
            raise ParamError("regressor_depth", "regressor_depth must be >= 2 (a hidden layer)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


register_config("metamodelnet")(MetaModelNetConfig)
