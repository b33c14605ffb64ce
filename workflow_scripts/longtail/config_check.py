"""Checks of config.yaml beyond its JSON schema, run at parse time (no torch, no data reads).

They read the config as Snakemake's ``validate`` leaves it (the schema's defaults filled in);
:func:`validate_config` does both steps for code outside Snakemake. Each problem raises
:class:`ConfigError` with one line that names the offending key and the fix. Beyond the schema:
method parameters against their dataclass's annotations (strictly: bool is not an int), each
run's ``augment`` against its datasets' sources (an in-memory crop or a file decode), every
number finite, the schema's integers integral, class lists resolved to classes (no class twice),
curation's draws within the per-class pools of sources whose size is known without data, and
every ``paper_results`` key a column its dataset's table shows (else the figure never appears).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, MutableMapping

import yaml

from .contracts import IMBALANCED_TESTS
from .curation import class_sizes
from .glyphs import EMNIST_BALANCED
from .methods import make_config
from .methods.config import ParamError, yaml_repr
from .sources import FASHION_MNIST_CLASSES, available_sources, resolve_augment
from .tables import paper_columns
from .targets import check_targets, runs_of

SCHEMA = Path(__file__).resolve().parents[2] / "rules" / "schemas" / "config.schema.yaml"


@dataclass(frozen=True)
class SourceShape:
    """What is known of a source without reading its data: its classes, and for a released
    dataset of fixed size its images per class (an upper bound on what curation can draw)."""

    n_classes: int
    class_names: tuple[str, ...] | None = None  # None: read from the data
    train_per_class: int | None = None
    test_per_class: int | None = None


# CIFAR's class names come from its meta file (a CIFAR-layout copy may name them otherwise), so
# only class indices are checked there.
KNOWN_SOURCES = {
    "fashion_mnist": SourceShape(10, FASHION_MNIST_CLASSES, 6000, 1000),
    "cifar10": SourceShape(10, None, 5000, 1000),
    "cifar100": SourceShape(100, None, 500, 100),
}


def source_shape(source: Mapping) -> SourceShape | None:
    """The shape of a dataset's source block, or None where only its data can tell."""
    if source["name"] == "glyphs":  # the classes are the block's characters; pools depend on the fonts
        names = tuple(str(c) for c in source.get("classes") or EMNIST_BALANCED)
        return SourceShape(len(names), names)
    return KNOWN_SOURCES.get(source["name"])


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and the fix."""


def schema_error_line(exc: BaseException) -> str:
    """One line ``dotted.key: what is wrong`` from a JSON-schema failure.

    ``exc`` is the jsonschema ValidationError, or the WorkflowError that snakemake.utils.validate
    raised while handling one (then the ValidationError is its ``__context__``); anything else
    yields its first line.
    """
    err: BaseException | None = exc
    while err is not None and not hasattr(err, "absolute_path"):
        err = err.__context__
    if err is None:
        return str(exc).strip().splitlines()[0]
    path = ".".join(str(p) for p in err.absolute_path) or "<top level>"  # type: ignore[attr-defined]
    return f"{path}: {err.message}"  # type: ignore[attr-defined]


def validate_config(config: MutableMapping) -> MutableMapping:
    """What rules/common.smk does at parse time: the JSON schema (filling its defaults into
    ``config``), then :func:`check_config`. Returns ``config``; raises ConfigError."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA))
    except WorkflowError as exc:
        raise ConfigError(schema_error_line(exc)) from None
    check_config(config)
    return config


def check_config(config: Mapping) -> None:
    """Raise ConfigError on the first problem found in a schema-validated config."""
    runs = config["runs"]
    for name, run in runs.items():
        try:
            make_config(run["method"], run["params"])
        except ParamError as exc:
            raise ConfigError(f"runs.{name}.params.{exc.key}: {exc.problem}") from None
        except ValueError as exc:
            raise ConfigError(f"runs.{name}: {exc}") from None
        parent = run["init_from"]
        if parent is not None and parent not in runs:
            raise ConfigError(f"runs.{name}.init_from: no run named '{parent}'; define it under runs")
        seen = {name}
        while parent is not None:  # the init_from chain must end
            if parent in seen:
                raise ConfigError(f"runs.{name}.init_from: cycle through '{parent}'")
            seen.add(parent)
            parent = runs[parent]["init_from"]
    _check_finite(config, "")
    _check_integers(config)
    shots = config["shots"]
    if shots["few"] > shots["many"]:
        raise ConfigError(f"shots: few ({shots['few']}) must not exceed many ({shots['many']})")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise ConfigError("seeds: values repeat; list each seed once")
    for dname, ds in config["datasets"].items():
        _check_dataset(dname, ds, runs)
        _check_open_threshold(dname, ds, config["open_threshold"])
    for r in config["tsne"]["runs"]:
        if r not in runs:
            raise ConfigError(f"tsne.runs: no run named '{r}'")
    for dname, per_run in config["paper_results"].items():
        if dname not in config["datasets"]:
            raise ConfigError(f"paper_results.{dname}: no dataset of that name")
        trained = runs_of(config, dname)
        curation = config["datasets"][dname]["curation"]
        columns = paper_columns(tuple(IMBALANCED_TESTS[t] for t in curation.get("imbalanced_tests", [])))
        for r, figures in per_run.items():
            if r not in runs:
                raise ConfigError(f"paper_results.{dname}.{r}: no run of that name; runs: {', '.join(runs)}")
            # a run the dataset's `runs` list leaves out is valid (a restricted experiment): its
            # figures just have no row to sit in; the keys are still checked
            for key in figures:
                if key not in columns:  # a key no table column shows would silently never appear
                    raise ConfigError(f"paper_results.{dname}.{r}.{key}: not a table column; choose one of "
                                      f"{', '.join(columns)}")
    try:
        check_targets(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_finite(node: Any, path: str) -> None:
    """YAML's .nan and .inf pass every schema bound (comparisons with NaN are false)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path or '<top level>'}: expected a finite number, got {yaml_repr(node)}")
    items = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        _check_finite(value, f"{path}.{key}" if path else str(key))


@lru_cache(maxsize=1)
def _strict_validator() -> Any:
    """The schema's validator with JSON Schema's integer narrowed to Python's: the standard one
    accepts 20.0 (and curation then slices with it)."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    return strict(yaml.safe_load(SCHEMA.read_text()))


def _check_integers(config: Mapping) -> None:
    from jsonschema.exceptions import best_match

    err = best_match(_strict_validator().iter_errors(config))
    if err is None:
        return
    path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    value = err.instance
    if isinstance(value, float) and value.is_integer():
        raise ConfigError(f"{path}: expected an integer, got {value!r}; write {int(value)}")
    raise ConfigError(f"{path}: {err.message}")


def _resolve_classes(key: str, entries: list, src: str, shape: SourceShape | None) -> list:
    """The class each entry of a class list names: its index where the source's classes are known
    without data (a name first, then a digit string as an index, as curation resolves them), else
    its spelling. Refuses classes the source lacks and a class listed twice."""
    names = shape.class_names if shape else None
    idents: list = []
    for c in entries:
        s = str(c)
        if names is not None and s in names:
            ident: Any = names.index(s)
        elif shape is not None and s.isdigit():
            if int(s) >= shape.n_classes:
                raise ConfigError(f"{key}: class index {s} is out of range; {src} has classes 0-{shape.n_classes - 1}")
            ident = int(s)
        elif names is not None:
            raise ConfigError(f"{key}: class '{s}' is not a class of {src}; classes: {list(names)} "
                              f"or their indices 0-{len(names) - 1}")
        else:
            ident = s
        if ident in idents:
            first = entries[idents.index(ident)]
            what = (f"{yaml_repr(first)} and {yaml_repr(c)} name the same class"
                    + (f" ({names[ident]})" if names is not None else "")) if str(first) != s else \
                f"{yaml_repr(c)} is listed twice"
            raise ConfigError(f"{key}: {what}; list each class once")
        idents.append(ident)
    return idents


def _check_open_threshold(dname: str, ds: Mapping, global_spec: Any) -> None:
    """The val_tpr rule reads the val predictions: a dataset with an open set needs a val split."""
    spec = global_spec if ds["open_threshold"] is None else ds["open_threshold"]
    cur = ds["curation"]
    has_open = bool(cur["open_classes"] or cur["far_open"]) or cur["profile"] == "lists"
    if isinstance(spec, Mapping) and has_open and cur["profile"] != "lists" and cur["val_per_class"] == 0:
        where = f"datasets.{dname}.open_threshold" if ds["open_threshold"] is not None else "open_threshold"
        raise ConfigError(f"{where}: the val_tpr rule needs validation samples but datasets.{dname}.curation."
                          "val_per_class is 0; give the threshold as a number or keep a validation split")
    for i, entry in enumerate(cur["far_open"]):
        name = entry["source"]["name"]
        if name not in available_sources():
            raise ConfigError(f"datasets.{dname}.curation.far_open.{i}.source.name: unknown source '{name}'; "
                              f"choose from {available_sources()}")
        if entry["per_class"] is not None and entry["n"] is not None:
            raise ConfigError(f"datasets.{dname}.curation.far_open.{i}: give per_class or n, not both")


def _check_dataset(dname: str, ds: Mapping, runs: Mapping) -> None:
    key = f"datasets.{dname}"
    for r in ds["runs"]:
        if r not in runs:
            raise ConfigError(f"{key}.runs: no run named '{r}'")
        parent = runs[r]["init_from"]
        if parent and parent not in ds["runs"]:
            raise ConfigError(f"{key}.runs: '{r}' starts from '{parent}', which must be listed too")
    src = ds["source"]["name"]
    for r in ds["runs"] or runs:  # an augmentation its images cannot take ([] = every run)
        try:
            resolve_augment(runs[r]["params"].get("augment", "auto"), src)
        except ValueError as exc:
            raise ConfigError(f"runs.{r}.params.augment: {exc} (dataset {dname})") from None
    cur = ds["curation"]
    shape = source_shape(ds["source"])
    open_ids = _resolve_classes(f"{key}.curation.open_classes", cur["open_classes"], src, shape)
    known_ids = _resolve_classes(f"{key}.curation.known_classes", cur["known_classes"], src, shape)
    both = [c for c, i in zip(cur["open_classes"], open_ids) if i in known_ids]
    if both:
        raise ConfigError(f"{key}.curation.open_classes: {both} also listed in known_classes; a class is open or known")
    profile = cur["profile"]
    n_max, imb = cur["n_max"], cur["imbalance_factor"]
    if profile in ("exponential", "step") and n_max / imb < 1:
        raise ConfigError(f"{key}.curation.imbalance_factor: {imb} leaves the smallest class under 1 image "
                          f"(n_max {n_max}); lower it or raise n_max")
    n_test, test_imb = cur["test_per_class"], cur["test_imbalance_factor"]
    if test_imb is None and profile in ("exponential", "step"):
        test_imb = imb  # null = the training imbalance (other profiles: known only after curation)
    if cur["imbalanced_tests"] and n_test is not None and test_imb is not None and n_test / test_imb < 1:
        raise ConfigError(f"{key}.curation.test_imbalance_factor: {test_imb} leaves the smallest class of the "
                          f"imbalanced tests under 1 image (test_per_class {n_test}); lower it")
    if profile == "pareto" and cur["n_min"] > n_max:
        raise ConfigError(f"{key}.curation.n_min: larger than n_max")
    if shape is None or profile == "lists":  # lists: the source's own splits, as they are
        return
    n_known = len(known_ids) or shape.n_classes - len(open_ids)
    if n_known < 2:
        raise ConfigError(f"{key}.curation.open_classes: leaves {n_known} known class; need at least 2")
    sizes = None if profile == "none" else class_sizes(
        profile, n_known, n_max, imb, n_min=cur["n_min"], pareto_alpha=cur["pareto_alpha"],
        step_fraction=cur["step_fraction"])
    # a development meta set copies min(meta_per_class, n_c) images of class c (MFM appendix C.3:
    # "10 samples per class, other than the least frequency class with 6 samples"), so a
    # meta_per_class above the smallest class is valid
    if shape.train_per_class is not None:
        _check_pools(f"{key}.curation", cur, src, shape, 1 if sizes is None else int(sizes.max()))


def _check_pools(key: str, cur: Mapping, src: str, shape: SourceShape, largest: int) -> None:
    """Curation draws val (and a disjoint meta set) from each known class's training images ahead
    of its training images, and test / open images from its test images: a released dataset's
    fixed pool sizes bound all of them."""
    pool, val = shape.train_per_class, cur["val_per_class"]
    meta = cur["meta_per_class"] if cur["meta_mode"] == "disjoint" else 0
    need = val + meta + largest
    if need > pool:
        # blame the largest share (profile none keeps whatever is left, so never n_max there)
        shares = {"val_per_class": val, "meta_per_class": meta, "n_max": largest if cur["profile"] != "none" else 0}
        blame = max(shares, key=shares.__getitem__)
        # (lowering n_max by the excess fits only when the largest class has n_max images)
        fits = cur[blame] - (need - pool) if blame != "n_max" or largest == cur["n_max"] else 0
        fix = f"lower {blame} to {fits} or less" if fits >= 1 else "lower n_max, val_per_class or meta_per_class"
        train = "at least 1 training image" if cur["profile"] == "none" else \
            f"{largest} training images (largest class)"
        raise ConfigError(f"{key}.{blame}: each class needs {val} validation + {meta} meta + {train} = {need} "
                          f"images, but {src} has {pool} training images per class; {fix}")
    for name, what in (("test_per_class", "known"), ("open_per_class", "open")):
        n = cur[name]
        if n is not None and n > shape.test_per_class:
            raise ConfigError(f"{key}.{name}: {n} is more than the {shape.test_per_class} test images of each "
                              f"{what} class of {src}; lower it to {shape.test_per_class} or less, or null (all)")
