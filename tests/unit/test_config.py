"""Registries and config checks: every method has a frozen config, names stay in step with the
torch-side registries, and malformed config.yaml files fail with a message naming the key."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from longtail import losses, methods, models, samplers
from longtail import methods as configs
from longtail.config_check import ConfigError, check_config
from longtail.methods import config as base

ROOT = Path(__file__).resolve().parents[2]
METHODS = methods.available_methods()


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


# ------------------------------------------------------------------------------ registries


def test_every_method_has_a_config_and_vice_versa():
    assert METHODS, "no method registered"
    assert "plain" in METHODS
    assert METHODS == configs.config_names()


def test_torch_free_name_lists_match_the_registries():
    # configs/ validates names at parse time without importing torch; these lists must match
    # what the torch-side registries really provide.
    assert sorted(base.BACKBONES) == models.available_backbones()
    assert sorted(base.SAMPLERS) == samplers.available_samplers()
    assert sorted(base.LOSSES) == losses.available_losses()


@pytest.mark.parametrize("name", METHODS)
def test_method_config_defaults_build_and_are_frozen(name):
    cfg = configs.make_config(name, {})
    assert dataclasses.is_dataclass(cfg)
    assert methods.method_class(name).Config is type(cfg)
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, first, getattr(cfg, first))
    # the resolved config round-trips through make_config (as load_trained rebuilds it)
    as_dict = dataclasses.asdict(cfg)
    assert configs.make_config(name, as_dict) == cfg
    assert methods.create_method(name, {}).cfg == cfg


@pytest.mark.parametrize("name", METHODS)
def test_unknown_parameter_is_named(name):
    with pytest.raises(ValueError, match="no_such_knob"):
        configs.make_config(name, {"no_such_knob": 1})


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="no_such_method"):
        configs.make_config("no_such_method", {})
    with pytest.raises(ValueError, match="no_such_method"):
        methods.create_method("no_such_method")


def test_bad_value_names_the_key():
    with pytest.raises(ValueError, match="backbone"):
        configs.make_config("plain", {"backbone": "vgg99"})
    with pytest.raises(ValueError, match="lr"):
        configs.make_config("plain", {"lr": 0})
    # lists from YAML become tuples, so configs stay hashable and frozen
    assert configs.make_config("plain", {"milestones": [3, 6]}).milestones == (3, 6)


# ------------------------------------------------------------------------------ check_config


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/smoke.yaml", "tests/configs/large.yaml"])
def test_shipped_configs_pass(path):
    cfg = yaml.safe_load((ROOT / path).read_text())
    if path.endswith("large.yaml"):  # layered on config.yaml (see its header), merged as Snakemake does
        layered = default_config()
        update_config(layered, cfg)
        cfg = layered
    check_config(cfg)


def _set(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


@pytest.mark.parametrize("dotted, value, named", [
    ("runs.plain.params.lr", -1.0, "runs.plain"),
    ("runs.plain.init_from", "ghost", "runs.plain.init_from"),
    ("datasets.fmnist_lt.curation.open_classes", ["Bag", "Sock"], "Sock"),
    ("datasets.fmnist_lt.curation.imbalance_factor", 5000, "datasets.fmnist_lt.curation.imbalance_factor"),
    ("tsne.runs", ["ghost"], "tsne.runs"),
    ("seeds", [0, 1, 0], "seeds"),
])
def test_malformed_config_names_the_key(dotted, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        check_config(_set(default_config(), dotted, value))


def test_init_from_cycle_is_rejected():
    cfg = default_config()
    cfg["runs"] = {"a": {"method": "plain", "init_from": "b"}, "b": {"method": "plain", "init_from": "a"}}
    cfg["tsne"] = {"runs": []}
    with pytest.raises(ConfigError, match="cycle"):
        check_config(cfg)
