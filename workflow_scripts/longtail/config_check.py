"""Checks of config.yaml beyond its JSON schema, run at parse time (no torch, no data reads).

They read the config as Snakemake's ``validate`` leaves it (the schema's defaults filled in);
:func:`validate_config` does both steps for code outside Snakemake. Each problem raises
:class:`ConfigError` with one line that names the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, MutableMapping

import numpy as np

from .curation import class_sizes
from .methods import make_config
from .sources import FASHION_MNIST_CLASSES
from .targets import check_targets

SCHEMA = Path(__file__).resolve().parents[2] / "rules" / "schemas" / "config.schema.yaml"

# Class names known without reading data, to check open/known class lists early.
STATIC_CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASSES}


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
    shots = config["shots"]
    if shots["few"] > shots["many"]:
        raise ConfigError(f"shots: few ({shots['few']}) must not exceed many ({shots['many']})")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise ConfigError("seeds: values repeat; list each seed once")
    for dname, ds in config["datasets"].items():
        _check_dataset(dname, ds, runs)
    for r in config["tsne"]["runs"]:
        if r not in runs:
            raise ConfigError(f"tsne.runs: no run named '{r}'")
    for dname, per_run in config["paper_results"].items():
        if dname not in config["datasets"]:
            raise ConfigError(f"paper_results.{dname}: no dataset of that name")
        for r in per_run:
            if r not in runs:
                raise ConfigError(f"paper_results.{dname}.{r}: no run of that name")
    try:
        check_targets(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_dataset(dname: str, ds: Mapping, runs: Mapping) -> None:
    key = f"datasets.{dname}"
    for r in ds["runs"]:
        if r not in runs:
            raise ConfigError(f"{key}.runs: no run named '{r}'")
        parent = runs[r]["init_from"]
        if parent and parent not in ds["runs"]:
            raise ConfigError(f"{key}.runs: '{r}' starts from '{parent}', which must be listed too")
    cur = ds["curation"]
    src = ds["source"]["name"]
    names = STATIC_CLASS_NAMES.get(src)
    open_cls = [str(c) for c in cur["open_classes"]]
    known_cls = [str(c) for c in cur["known_classes"]]
    if names is not None:
        for c in open_cls + known_cls:
            if c not in names and not (c.isdigit() and int(c) < len(names)):
                raise ConfigError(f"{key}.curation: class '{c}' is not a class of {src}; classes: {list(names)}")
    both = sorted(set(open_cls) & set(known_cls))
    if both:
        raise ConfigError(f"{key}.curation.open_classes: {both} also listed in known_classes; a class is open or known")
    if len(set(open_cls)) != len(open_cls):
        raise ConfigError(f"{key}.curation.open_classes: a class is listed twice")
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
    if names is not None and profile not in ("none", "lists"):
        n_known = len(known_cls) or len(names) - len(open_cls)
        if n_known < 2:
            raise ConfigError(f"{key}.curation.open_classes: leaves {n_known} known class; need at least 2")
        sizes = class_sizes(profile, n_known, n_max, imb, n_min=cur["n_min"], pareto_alpha=cur["pareto_alpha"],
                            step_fraction=cur["step_fraction"], rng=np.random.default_rng(cur["seed"]))
        k = cur["meta_per_class"]
        if cur["meta_mode"] == "development" and k > sizes.min():
            raise ConfigError(f"{key}.curation.meta_per_class: {k} is larger than the smallest class "
                              f"({int(sizes.min())} images); lower it")
