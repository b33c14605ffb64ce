"""Curation: long-tailed subsampling, open-set split, balanced val / meta sets.

Pure functions of a :class:`~longtail.sources.SourceData` and a :class:`CurationConfig`; the
``curate`` rule only writes what they return. Known classes are relabelled 0..C-1 from head to
tail, so label order equals frequency order; open-set samples carry label -1.

Imbalanced test splits (MFM appendix C.1, opt-in ``imbalanced_tests``): Test-1 ``test_reversed``
and Test-2 ``test_permuted`` are subsets of the balanced test split. samples.parquet has one
``split`` per row, so they are stored as extra rows: copies of the chosen test rows (same source
image, label, class, shot group) whose sample_id is the test row's prefixed ``rev-`` / ``perm-``
(as the "development" meta set copies training rows with ``dev-``). Every consumer that selects
rows by split keeps working; the predictions of the copies are the test predictions of the same
images (:func:`imbalanced_test_predictions`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .contracts import (IMBALANCED_TEST_PREFIX, IMBALANCED_TEST_SPLITS, IMBALANCED_TESTS, SPLITS,
                        samples_table)
from .sources import DataError, SourceData, far_pool


SHOT_CONVENTIONS = ("strict", "inclusive")


@dataclass(frozen=True)
class ShotConfig:
    """Shot groups by training count n, under one of two conventions:

    - ``strict`` (default; decoupling, BALMS): many n > many, few n < few, medium otherwise;
    - ``inclusive`` (OLTR's and KT's evaluation code, which produced their papers' numbers):
      many n >= many, few n <= few, medium otherwise.
    """

    many: int = 100
    few: int = 20
    convention: str = "strict"

    def __post_init__(self) -> None:
        if self.convention not in SHOT_CONVENTIONS:
            raise ValueError(f"shots.convention: '{self.convention}' is not one of {list(SHOT_CONVENTIONS)}")
        if self.few > self.many:
            raise ValueError(f"shots: few ({self.few}) must not exceed many ({self.many})")

    def group(self, n: int) -> str:
        if self.convention == "inclusive":
            return "many" if n >= self.many else "few" if n <= self.few else "medium"
        return "many" if n > self.many else "few" if n < self.few else "medium"

    @property
    def description(self) -> str:
        """The groups as inequalities, named by convention (every table's note carries it)."""
        if self.convention == "inclusive":
            return (f"{self.convention}: many n >= {self.many}, medium {self.few} < n < {self.many}, "
                    f"few n <= {self.few}")
        return (f"{self.convention}: many n > {self.many}, medium {self.few} <= n <= {self.many}, "
                f"few n < {self.few}")


@dataclass(frozen=True)
class FarOpenConfig:
    """One source of the far open set (split ``open_far``): ``source`` is a source block (name and
    options), ``split`` the source's own split drawn from, ``classes`` its classes drawn from
    (empty = all); ``per_class`` seeded draws per class or ``n`` in all (neither = every image)."""

    source: Mapping
    split: str = "test"
    classes: tuple[str, ...] = ()
    per_class: int | None = None
    n: int | None = None

    def __post_init__(self) -> None:
        if "name" not in self.source:
            raise ValueError("far_open: each entry's source needs a name")
        if self.per_class is not None and self.n is not None:
            raise ValueError("far_open: give per_class or n, not both")

    @classmethod
    def from_dict(cls, d: Mapping) -> "FarOpenConfig":
        d = dict(d)
        d["classes"] = tuple(str(c) for c in d.get("classes", ()))
        d["source"] = dict(d["source"])
        return cls(**d)

    def to_dict(self) -> dict:
        return {"source": dict(self.source), "split": self.split, "classes": list(self.classes),
                "per_class": self.per_class, "n": self.n}


# samples.parquet metadata key holding the far-open entries, so the train job loads the same pools
FAR_OPEN_KEY = "far_open"


@dataclass(frozen=True)
class CurationConfig:
    """How a long-tailed, open-set dataset is carved out of a source.

    profile: ``exponential`` (n_i = floor(n_max * IF^(-i/(C-1))), CIFAR-LT), ``step`` (the first
    ``step_fraction`` of classes keep n_max, the rest n_max/IF), ``pareto`` (sizes at evenly spaced
    quantiles of a Pareto(alpha) mapped onto [n_min, n_max]: alpha 7.75 gives ImageNet-LT's shape,
    1.88 Places-LT's; see :func:`class_sizes`), ``none`` (keep all,
    e.g. SUN-397's natural tail) or ``lists`` (the source's published split lists as they are).
    """

    profile: str = "exponential"
    n_max: int = 1000
    imbalance_factor: float = 100.0
    n_min: int = 2
    pareto_alpha: float = 7.75  # ImageNet-LT's shape (see class_sizes)
    step_fraction: float = 0.5
    class_order: str = "natural"  # or "permuted" (seeded)
    open_classes: tuple[str, ...] = ()
    known_classes: tuple[str, ...] = ()  # empty = every class that is not open
    val_per_class: int = 20
    meta_per_class: int = 0
    meta_mode: str = "disjoint"  # "disjoint": carved out of the pool; "development": copies of train
    test_per_class: int | None = None
    open_per_class: int | None = None
    shots: ShotConfig = field(default_factory=ShotConfig)
    # MFM appendix C.1 (see imbalanced_test_sizes): which imbalanced test splits to add, the
    # imbalance of their profile (the paper: 10 whatever the training imbalance; None = the
    # training one), how many head classes Test-1 truncates to its smallest count (None = C // 2,
    # the paper's "first five" of CIFAR-10's 10) and the seed of their draws (None = ``seed``).
    imbalanced_tests: tuple[str, ...] = ()
    test_imbalance_factor: float | None = 10.0
    reversed_flat_classes: int | None = None
    imbalanced_test_seed: int | None = None
    far_open: tuple[FarOpenConfig, ...] = ()  # far open set (split open_far), see FarOpenConfig

    def __post_init__(self) -> None:
        unknown = sorted(set(self.imbalanced_tests) - set(IMBALANCED_TESTS))
        if unknown:
            raise ValueError(f"imbalanced_tests: unknown {unknown}; choose from {list(IMBALANCED_TESTS)}")
        if self.test_imbalance_factor is not None and self.test_imbalance_factor < 1:
            raise ValueError(f"test_imbalance_factor: must be >= 1, got {self.test_imbalance_factor}")
        if self.reversed_flat_classes is not None and self.reversed_flat_classes < 0:
            raise ValueError(f"reversed_flat_classes: must be >= 0, got {self.reversed_flat_classes}")

    @classmethod
    def from_dict(cls, d: Mapping) -> "CurationConfig":
        d = dict(d)
        shots = ShotConfig(**d.pop("shots", {}))
        d["open_classes"] = tuple(str(c) for c in d.get("open_classes", ()))
        d["known_classes"] = tuple(str(c) for c in d.get("known_classes", ()))
        d["imbalanced_tests"] = tuple(str(c) for c in d.get("imbalanced_tests", ()))
        d["far_open"] = tuple(f if isinstance(f, FarOpenConfig) else FarOpenConfig.from_dict(f)
                              for f in d.get("far_open", ()))
        return cls(shots=shots, **d)


def class_sizes(
    profile: str,
    n_classes: int,
    n_max: int,
    imbalance_factor: float = 100.0,
    *,
    n_min: int = 2,
    pareto_alpha: float = 6.0,
    step_fraction: float = 0.5,
) -> np.ndarray:
    """Training images per class, head first (non-increasing)."""
    if n_classes < 1:
        raise ValueError("need at least one known class")
    if profile == "exponential":
        if n_classes == 1:
            return np.array([n_max])
        i = np.arange(n_classes)
        # float64 then floor, as int(n_max * (1/IF)**(i/(C-1))) in LDAM-DRW's imbalance_cifar.py
        return np.array([int(n_max * (1.0 / imbalance_factor) ** (k / (n_classes - 1))) for k in i])
    if profile == "step":
        n_head = int(round(n_classes * step_fraction))
        return np.array([n_max] * n_head + [int(n_max / imbalance_factor)] * (n_classes - n_head))
    if profile == "pareto":
        # Class sizes at evenly spaced quantiles of a Pareto(alpha) (x = u^(-1/alpha) at the
        # rank midpoints u_i = (i + 1/2) / C), mapped linearly onto [n_min, n_max] (OLTR Sec. 5:
        # ImageNet-LT "sampled following the Pareto distribution with alpha = 6", sizes 1280 -> 5).
        # Deterministic: the same (C, n_max, n_min, alpha) always gives the same sizes. alpha sets
        # the tail: alpha = 7.75 gives ImageNet-LT's shape (C 1000, 1280 -> 5: 117,697 images,
        # 400 / 460 / 140 many / medium / few under the strict thresholds; published 115,846 and
        # 385 / 479 / 136), alpha = 1.88 Places-LT's (C 365, 4980 -> 5: 62,876 images; 62,500).
        if pareto_alpha <= 0:
            raise ValueError(f"pareto_alpha must be > 0, got {pareto_alpha}")
        if n_classes == 1:
            return np.array([n_max])
        x = ((np.arange(n_classes) + 0.5) / n_classes) ** (-1.0 / pareto_alpha)
        t = (x - x[-1]) / (x[0] - x[-1])  # 1 for the head class, 0 for the last
        # (+1e-9: the end points must floor to exactly n_max and n_min)
        return np.floor(n_min + (n_max - n_min) * t + 1e-9).astype(int)
    raise ValueError(f"unknown long-tail profile '{profile}'; choose exponential, step, pareto or none")


def _resolve_classes(names: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    out = []
    for w in wanted:
        if w in names:
            out.append(names.index(w))
        elif str(w).isdigit() and int(w) < len(names):
            out.append(int(w))
        else:
            raise DataError(f"{what} class '{w}' is not a class of this source; classes are {list(names)}")
        if out.count(out[-1]) > 1:  # by name and by index, or twice the same
            raise DataError(f"curation.{what}_classes: '{w}' names class '{names[out[-1]]}', listed before; "
                            "list each class once")
    return out


def curate(source: SourceData, cfg: CurationConfig, seed: int = 0,
           far_sources: Sequence[SourceData] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (samples, class_counts) tables (``contracts.SAMPLES``, ``contracts.CLASS_COUNTS``).
    ``far_sources``: the loaded sources of ``cfg.far_open``, in order."""
    if cfg.profile == "lists" or source.fixed_splits:
        samples, counts = curate_lists(source, cfg)
    else:
        samples, counts = _curate_profile(source, cfg, seed)
    if cfg.imbalanced_tests:
        samples = add_imbalanced_tests(samples, cfg, seed)
        counts = class_counts(samples, cfg.shots)
    if cfg.far_open:
        samples = add_far_open(samples, cfg.far_open, far_sources, seed)
    return samples, counts


def add_far_open(samples: pd.DataFrame, entries: Sequence[FarOpenConfig], sources: Sequence[SourceData],
                 seed: int = 0) -> pd.DataFrame:
    """``samples`` with the far open set appended: rows of split ``open_far``, label -1, shot group
    'open', source = :func:`far_pool` (entry i, its split), class name '<source>:<class>'. Entry i
    draws with its own generator seeded by (seed, i): ``per_class`` images per class or ``n`` in
    all, sorted by index; asking for more than there are is an error. The entries are recorded in
    the samples' metadata (:data:`FAR_OPEN_KEY`) and each source's provenance under 'far<i>_'."""
    if len(entries) != len(sources):
        raise ValueError(f"far_open: {len(entries)} entries but {len(sources)} loaded sources")
    rows: list[tuple] = []
    attrs = dict(samples.attrs)
    for i, (entry, src) in enumerate(zip(entries, sources)):
        if entry.split not in src.labels:
            raise DataError(f"curation.far_open[{i}]: source '{src.name}' has no split '{entry.split}' "
                            f"(it has {sorted(src.labels)})")
        names = list(src.class_names)
        labels = np.asarray(src.labels[entry.split])
        classes = _resolve_classes(names, entry.classes, "far_open") if entry.classes else sorted(set(labels.tolist()))
        rng = np.random.default_rng([seed, i])
        if entry.per_class is not None:
            picked = []
            for c in classes:
                idx = np.flatnonzero(labels == c)
                if len(idx) < entry.per_class:
                    raise DataError(f"curation.far_open[{i}].per_class: class '{names[c]}' of {src.name} has "
                                    f"{len(idx)} {entry.split} images, fewer than {entry.per_class}; lower it")
                picked.append(rng.permutation(idx)[: entry.per_class])
            idx = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
        else:
            idx = np.flatnonzero(np.isin(labels, classes))
            if entry.n is not None:
                if len(idx) < entry.n:
                    raise DataError(f"curation.far_open[{i}].n: {src.name} has {len(idx)} {entry.split} images "
                                    f"of the chosen classes, fewer than {entry.n}; lower it")
                idx = np.sort(rng.permutation(idx)[: entry.n])
        pool = far_pool(i, entry.split)
        for j in idx:
            rows.append((f"{pool}-{int(j)}", pool, int(j), "open_far", -1, f"{src.name}:{names[labels[j]]}", 0, "open"))
        attrs.update({f"far{i}_{k}": v for k, v in src.provenance.items()})
    out = pd.concat([samples, samples_table(rows)], ignore_index=True)
    attrs[FAR_OPEN_KEY] = json.dumps([e.to_dict() for e in entries], sort_keys=True)
    out.attrs.update(attrs)
    return out


def far_open_entries(samples: pd.DataFrame) -> list[FarOpenConfig]:
    """The far-open entries a samples table was curated with (none: [])."""
    raw = samples.attrs.get(FAR_OPEN_KEY)
    return [FarOpenConfig.from_dict(d) for d in json.loads(raw)] if raw else []


def _curate_profile(source: SourceData, cfg: CurationConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long-tailed subsampling of a source by ``cfg.profile`` (every profile but ``lists``)."""
    rng = np.random.default_rng(seed)
    names = list(source.class_names)
    open_ids = _resolve_classes(names, cfg.open_classes, "open")
    if cfg.known_classes:
        known = _resolve_classes(names, cfg.known_classes, "known")
        if set(known) & set(open_ids):
            raise DataError("a class is listed both in known_classes and open_classes")
    else:
        known = [c for c in range(len(names)) if c not in open_ids]
    if cfg.class_order == "permuted":
        known = list(rng.permutation(known))
    elif cfg.class_order != "natural":
        raise ValueError(f"class_order must be natural or permuted, got '{cfg.class_order}'")

    train_labels = source.labels["train"]
    pools = {c: rng.permutation(np.flatnonzero(train_labels == c)) for c in known}
    # val / meta come from the source's own pools when it has them (e.g. held-out typefaces),
    # else they are carved out of its train split ahead of the training images
    own_val, own_meta = "val" in source.labels, "meta" in source.labels
    reserved = (0 if own_val else cfg.val_per_class) + (
        cfg.meta_per_class if cfg.meta_mode == "disjoint" and not own_meta else 0)
    if cfg.profile == "none":
        sizes = np.array([len(pools[c]) - reserved for c in known])
        order = np.argsort(-sizes, kind="stable")
        known, sizes = [known[i] for i in order], sizes[order]
    else:
        sizes = class_sizes(
            cfg.profile, len(known), cfg.n_max, cfg.imbalance_factor, n_min=cfg.n_min,
            pareto_alpha=cfg.pareto_alpha, step_fraction=cfg.step_fraction,
        )
    rows: list[tuple] = []

    def add(split: str, src: str, idx: np.ndarray, label: int, cname: str, n_train: int, group: str,
            prefix: str = "") -> None:
        for i in idx:
            rows.append((f"{prefix}{src}-{int(i)}", src, int(i), split, label, cname, n_train, group))

    for label, (c, n_c) in enumerate(zip(known, sizes)):
        pool = pools[c]
        if n_c < 1:
            fix = "val_per_class or meta_per_class" if cfg.profile == "none" else "imbalance_factor"
            raise DataError(f"class '{names[c]}' would get {n_c} training images; lower {fix}")
        if len(pool) < reserved + n_c:
            raise DataError(
                f"class '{names[c]}' has {len(pool)} source images but val/meta/train need "
                f"{reserved + n_c}; lower n_max, val_per_class or meta_per_class"
            )
        group = cfg.shots.group(int(n_c))
        start = 0
        if own_val:
            add("val", "val", _own_pool(source, "val", c, cfg.val_per_class, rng), label, names[c], int(n_c), group)
        else:
            add("val", "train", pool[: cfg.val_per_class], label, names[c], int(n_c), group)
            start = cfg.val_per_class
        if cfg.meta_per_class and cfg.meta_mode == "disjoint":
            if own_meta:
                meta = _own_pool(source, "meta", c, cfg.meta_per_class, rng)
                add("meta", "meta", meta, label, names[c], int(n_c), group)
            else:
                add("meta", "train", pool[start: start + cfg.meta_per_class], label, names[c], int(n_c), group)
                start += cfg.meta_per_class
        train = pool[start: start + n_c]
        add("train", "train", train, label, names[c], int(n_c), group)
        if cfg.meta_per_class and cfg.meta_mode == "development":
            # development set: copies of training images (MFM sec. 3.2, mode b)
            dev = train[: min(cfg.meta_per_class, n_c)]
            add("meta", "train", dev, label, names[c], int(n_c), group, prefix="dev-")
        test = _test_pool(source, c, cfg.test_per_class, "test_per_class")
        if cfg.test_per_class is not None:
            test = rng.permutation(test)[: cfg.test_per_class]
        add("test", "test", np.sort(test), label, names[c], int(n_c), group)
    if cfg.meta_mode not in ("disjoint", "development"):
        raise ValueError(f"meta_mode must be disjoint or development, got '{cfg.meta_mode}'")

    for c in open_ids:
        test = _test_pool(source, c, cfg.open_per_class, "open_per_class")
        if cfg.open_per_class is not None:
            test = rng.permutation(test)[: cfg.open_per_class]
        add("open", "test", np.sort(test), -1, names[c], 0, "open")

    return _tables(rows, cfg.shots, source)


def _test_pool(source: SourceData, c: int, n: int | None, key: str) -> np.ndarray:
    """Test images of class ``c``; asking for more than it has is an error, never a silent cap."""
    idx = np.flatnonzero(source.labels["test"] == c)
    if n is not None and len(idx) < n:
        raise DataError(f"curation.{key}: class '{source.class_names[c]}' has {len(idx)} test images, fewer than "
                        f"{key} {n}; lower it to {len(idx)} or less, or null (all)")
    return idx


def _own_pool(source: SourceData, split: str, c: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` seeded draws of class ``c`` from the source's own ``split`` pool, in index order."""
    idx = np.flatnonzero(source.labels[split] == c)
    if len(idx) < n:
        raise DataError(f"class '{source.class_names[c]}' has {len(idx)} images in the source's {split} "
                        f"pool but {split}_per_class is {n}; lower it")
    return np.sort(rng.permutation(idx)[:n])


def _tables(rows: list[tuple], shots: ShotConfig, source: SourceData) -> tuple[pd.DataFrame, pd.DataFrame]:
    samples = samples_table(rows)
    samples.attrs.update(source.provenance)  # saved in the parquet metadata (e.g. list checksums)
    return samples, class_counts(samples, shots)


def curate_lists(source: SourceData, cfg: CurationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Samples of a source whose splits are fixed by published lists (ImageNet-LT, Places-LT).

    Labels keep the lists' class ids (not re-ordered by frequency); the open list's samples get -1.
    A source without a val list gets no val split."""
    names = list(source.class_names)
    counts = np.bincount(source.labels["train"], minlength=len(names))
    rows: list[tuple] = []
    for split, labels in source.labels.items():
        if split not in SPLITS:
            raise DataError(f"list split '{split}' is not one of {SPLITS}")
        for i, lab in enumerate(labels):
            if split == "open" or lab < 0:
                rows.append((f"{split}-{i}", split, i, "open", -1, "open", 0, "open"))
            else:
                n = int(counts[lab])
                rows.append((f"{split}-{i}", split, i, split, int(lab), names[lab], n, cfg.shots.group(n)))
    return _tables(rows, cfg.shots, source)


def class_counts(samples: pd.DataFrame, shots: ShotConfig) -> pd.DataFrame:
    """One row per known class: label, class_name, train/val/meta/test counts (and
    n_test_reversed / n_test_permuted when those splits exist), shot_group."""
    known = samples[samples["label"] >= 0]
    present = set(known["split"])
    splits = ["train", "val", "meta", "test", *(s for s in IMBALANCED_TEST_SPLITS if s in present)]
    table = (
        known.groupby(["label", "class_name", "split"]).size().unstack("split", fill_value=0)
        .reindex(columns=splits, fill_value=0).reset_index()
    )
    table.columns.name = None
    table = table.rename(columns={s: f"n_{s}" for s in splits})
    table["shot_group"] = [shots.group(int(n)) for n in table["n_train"]]
    table["convention"] = shots.description
    return table.sort_values("label").reset_index(drop=True)


# ------------------------------------------------------------------ imbalanced test splits


def imbalanced_test_sizes(kind: str, n_classes: int, n_test: int, imbalance_factor: float, *,
                          flat_classes: int | None = None,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """Test images per class of an MFM appendix C.1 test set, by training-frequency rank
    (index 0 = the class with most training images).

    Base profile: the training rule (MFM sec. 4, exponential) on the test set,
    n'_r = floor(n_test * IF^(-r/(C-1))), r = 0..C-1.
    ``reversed`` (Test-1): the frequencies reversed, c_r = n'_{C-1-r}, and the first
    ``flat_classes`` ranks "truncated" to the same count, the smallest one n'_{C-1} (the paper:
    "the first five class have the same number of samples" on CIFAR-10; None = C // 2).
    ``permuted`` (Test-2): c_r = n'_{pi(r)} for a random permutation pi drawn from ``rng``.
    """
    base = class_sizes("exponential", n_classes, n_test, imbalance_factor)
    if kind == "reversed":
        sizes = base[::-1].copy()
        k = n_classes // 2 if flat_classes is None else min(flat_classes, n_classes)
        sizes[:k] = sizes[0]  # reversed: sizes[0] = n'_{C-1}, the smallest count
        return sizes
    if kind == "permuted":
        rng = rng or np.random.default_rng(0)
        return base[rng.permutation(n_classes)]
    raise ValueError(f"imbalanced test '{kind}': choose from {list(IMBALANCED_TESTS)}")


def _test_imbalance(cfg: CurationConfig, train_counts: np.ndarray) -> float:
    """The test profile's imbalance: the configured one, else the training one (the profile's
    imbalance_factor, or the realised max/min training count of non-parametric profiles)."""
    if cfg.test_imbalance_factor is not None:
        return float(cfg.test_imbalance_factor)
    if cfg.profile in ("exponential", "step"):
        return float(cfg.imbalance_factor)
    return float(train_counts.max() / max(train_counts.min(), 1))


def add_imbalanced_tests(samples: pd.DataFrame, cfg: CurationConfig, seed: int = 0) -> pd.DataFrame:
    """``samples`` with the rows of the imbalanced test splits appended (copies of test rows).

    Classes are ranked by training count (ties: lower label first), so "reversed" is reversed
    with respect to the training frequencies also where labels are not head-to-tail ordered
    (``lists`` sources). The profile's n_test is the smallest per-class test count, so every
    class can supply its share. Each kind draws from its own generator, seeded by
    (imbalanced_test_seed or seed, kind index): Test-2 is the same with or without Test-1.
    """
    test = samples[(samples["split"] == "test") & (samples["label"] >= 0)]
    if test.empty:
        raise DataError("imbalanced_tests: the dataset has no known-class test split to draw from")
    per_class = test.groupby("label").agg(train_count=("train_count", "first"), n=("sample_id", "size"))
    ranked = per_class.sort_values("train_count", ascending=False, kind="stable")  # labels ascending on ties
    n_test = int(ranked["n"].min())
    imbalance = _test_imbalance(cfg, ranked["train_count"].to_numpy())
    base_seed = seed if cfg.imbalanced_test_seed is None else cfg.imbalanced_test_seed
    parts = [samples]
    for i, (kind, split) in enumerate(IMBALANCED_TESTS.items()):
        if kind not in cfg.imbalanced_tests:
            continue
        rng = np.random.default_rng([base_seed, i])
        sizes = imbalanced_test_sizes(kind, len(ranked), n_test, imbalance,
                                      flat_classes=cfg.reversed_flat_classes, rng=rng)
        if sizes.min() < 1:
            raise DataError(f"imbalanced_tests: {kind} would leave a class without test images "
                            f"({n_test} per class at imbalance {imbalance:g}); lower test_imbalance_factor")
        for label, n_c in zip(ranked.index, sizes):
            rows = test[test["label"] == label]
            pick = np.sort(rng.permutation(len(rows))[: int(n_c)])  # keep the test split's row order
            parts.append(rows.iloc[pick].assign(
                split=split, sample_id=IMBALANCED_TEST_PREFIX[kind] + rows["sample_id"].iloc[pick]))
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(samples.attrs)
    return out


def imbalanced_test_predictions(predictions: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` with rows for the imbalanced test splits the samples table has.

    Their rows are copies of test rows (the same image through the same network in eval mode),
    so their predictions are the test predictions of those images, found through the samples
    table's (source, source_index): exact and free. Predictions without a test split, or samples
    without imbalanced splits, come back unchanged."""
    copies = samples[samples["split"].isin(IMBALANCED_TEST_SPLITS)]
    if copies.empty or not (predictions["split"] == "test").any():
        return predictions
    key = ["source", "source_index"]
    test_ids = samples.loc[samples["split"] == "test", [*key, "sample_id"]].rename(
        columns={"sample_id": "test_id"})
    mapped = copies[[*key, "sample_id", "split"]].merge(test_ids, on=key, how="left", validate="many_to_one")
    by_id = predictions[predictions["split"] == "test"].set_index("sample_id")
    missing = ~mapped["test_id"].isin(by_id.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} imbalanced-test rows have no test prediction "
                         f"(e.g. {mapped.loc[missing, 'sample_id'].iloc[0]})")
    extra = by_id.loc[mapped["test_id"]].reset_index(drop=True)
    extra.insert(0, "sample_id", mapped["sample_id"].to_numpy())
    extra["split"] = mapped["split"].to_numpy()
    return pd.concat([predictions, extra[list(predictions.columns)]], ignore_index=True)
