"""Registries and config checks: every method has a frozen config, names stay in step with the
torch-side registries, the JSON schema agrees with the dataclasses and the sources behind its
blocks, and malformed config.yaml files fail with a message naming the key."""

import ast
import copy
import dataclasses
import math
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import update_config

from longtail import losses, methods, models, samplers, sources
from longtail import methods as configs
from longtail.config_check import KNOWN_SOURCES, SCHEMA, ConfigError, check_config, validate_config
from longtail.curation import CurationConfig, ShotConfig, curate
from longtail.glyphs import GlyphSettings
from longtail.methods import config as base
from longtail.methods.config import ParamError
from longtail.sources import DataError, SourceData

ROOT = Path(__file__).resolve().parents[2]
METHODS = methods.available_methods()


def default_config() -> dict:
    """The Fashion-MNIST-LT experiment (config/presets/fmnist_lt.yaml): small, on a released
    dataset whose pool sizes are fixed, and the base the layered configs extend."""
    return yaml.safe_load((ROOT / "config" / "presets" / "fmnist_lt.yaml").read_text())


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


# ------------------------------------------------------------------------------ field types

WRONG = {bool: ["yes", 1], int: [1.5, True, "ten", 2.0], float: [True, "fast", math.nan, math.inf],
         str: [18, True]}  # per annotated scalar type: values that must be refused


def _scalar(tp):
    """The scalar type of an annotation (``int | None`` -> int), or None for lists and mappings."""
    if typing.get_origin(tp) in (typing.Union, type(int | None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 and args[0] in WRONG else None
    return tp if tp in WRONG else None


SCALAR_FIELDS = [(name, f.name, _scalar(typing.get_type_hints(configs.config_class(name))[f.name]))
                 for name in METHODS for f in dataclasses.fields(configs.config_class(name))]
SCALAR_FIELDS = [c for c in SCALAR_FIELDS if c[2] is not None]


@pytest.mark.parametrize("method, key, tp", SCALAR_FIELDS, ids=[f"{m}.{k}" for m, k, _ in SCALAR_FIELDS])
def test_every_scalar_field_is_typed_strictly(method, key, tp):
    """bool is not an int, 1.5 or 2.0 not an integer, an int is a number, NaN and inf are refused."""
    for bad in WRONG[tp]:
        with pytest.raises(ParamError) as err:
            configs.make_config(method, {key: bad})
        assert err.value.key == key and "expected" in err.value.problem, (bad, str(err.value))
    if tp is float:  # an integer is a valid number (the value's own checks may still refuse it)
        try:
            configs.make_config(method, {key: 1})
        except ParamError as exc:
            assert "expected" not in exc.problem, str(exc)


def test_type_errors_read_as_yaml_and_suggest_the_default():
    with pytest.raises(ParamError, match=r"^epochs: expected an integer, got true; write e.g. 10 \(the default\)$"):
        configs.make_config("plain", {"epochs": True})
    with pytest.raises(ParamError, match=r"^epochs: expected an integer, got 1.5; write e.g. 6 "):
        configs.make_config("oltr", {"epochs": 1.5})  # the method's own default
    with pytest.raises(ParamError, match=r"^lr: expected a finite number, got -.inf"):
        configs.make_config("plain", {"lr": -math.inf})
    with pytest.raises(ParamError, match=r"^ks: expected a list of integers or null, got \[20, '100'\]"):
        configs.make_config("kt", {"ks": [20, "100"]})
    with pytest.raises(ParamError, match=r"^sampler_params: expected finite numbers, got \{alpha: .nan\}"):
        configs.make_config("plain", {"sampler_params": {"alpha": math.nan}})
    # valid values of every shape still build
    cfg = configs.make_config("plain", {"lr": 1, "milestones": [3, 6], "weights": None, "nesterov": True})
    assert cfg.lr == 1 and cfg.milestones == (3, 6)


def test_value_errors_name_the_key():
    with pytest.raises(ParamError) as err:
        configs.make_config("plain", {"epochs": 0})
    assert err.value.key == "epochs"
    cfg = _set(default_config(), "runs.plain.params.lr", -1.0)
    with pytest.raises(ConfigError, match=r"^runs\.plain\.params\.lr: must be > 0, got -1.0$"):
        validate_config(cfg)


def test_bad_value_names_the_key():
    with pytest.raises(ValueError, match="backbone"):
        configs.make_config("plain", {"backbone": "vgg99"})
    with pytest.raises(ValueError, match="lr"):
        configs.make_config("plain", {"lr": 0})
    # lists from YAML become tuples, so configs stay hashable and frozen
    assert configs.make_config("plain", {"milestones": [3, 6]}).milestones == (3, 6)


# ------------------------------------------------------------------------------ check_config


# layered on config/presets/fmnist_lt.yaml (see their headers), merged in order as Snakemake does
LAYERED = {"tests/configs/large.yaml": ["tests/configs/large.yaml"],
           "benchmarks/configs/paper_scale.yaml": ["benchmarks/configs/paper_scale.yaml"],
           "benchmarks/configs/paper_scale_main.yaml": ["benchmarks/configs/paper_scale.yaml",
                                                        "benchmarks/configs/paper_scale_main.yaml"]}
SHIPPED = ["config.yaml", *(str(p.relative_to(ROOT)) for pattern in
                            ("config/presets/*.yaml", "tests/configs/*.yaml", "benchmarks/configs/*.yaml")
                            for p in sorted(ROOT.glob(pattern)))]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_pass(path):
    if path in LAYERED:
        cfg = default_config()
        for layer in LAYERED[path]:
            update_config(cfg, yaml.safe_load((ROOT / layer).read_text()))
    else:
        cfg = yaml.safe_load((ROOT / path).read_text())
    validate_config(cfg)


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
        validate_config(_set(default_config(), dotted, value))


def test_open_threshold_rule_needs_a_val_split():
    cfg = _set(default_config(), "open_threshold", {"rule": "val_tpr", "tpr": 0.95})
    cfg["datasets"]["fmnist_lt"]["open_threshold"] = None
    validate_config(copy.deepcopy(cfg))
    with pytest.raises(ConfigError, match=r"^open_threshold: the val_tpr rule needs validation samples"):
        validate_config(_set(cfg, "datasets.fmnist_lt.curation.val_per_class", 0))
    # a fixed number needs none
    validate_config(_set(_set(cfg, "datasets.fmnist_lt.curation.val_per_class", 0), "open_threshold", 0.5))


def test_far_open_entries_are_checked():
    far = [{"source": {"name": "mnist"}, "per_class": 5}]
    with pytest.raises(ConfigError, match=r"far_open\.0\.source\.name: unknown source 'mnist'"):
        validate_config(_set(default_config(), "datasets.fmnist_lt.curation.far_open", far))
    both = [{"source": {"name": "glyphs"}, "per_class": 5, "n": 10}]
    with pytest.raises(ConfigError, match=r"far_open\.0: give per_class or n, not both"):
        validate_config(_set(default_config(), "datasets.fmnist_lt.curation.far_open", both))


def test_shipped_configs_stay_finite_and_feasible_on_the_default():
    """The Fashion-MNIST-LT config's numbers sit inside Fashion-MNIST's pools; one past them is refused."""
    cur = "datasets.fmnist_lt.curation"
    for key, value in (("test_per_class", 1001), ("open_per_class", 1001), ("val_per_class", 5001)):
        with pytest.raises(ConfigError, match=rf"^{cur}\.{key}: "):
            validate_config(_set(default_config(), f"{cur}.{key}", value))
    validate_config(_set(default_config(), f"{cur}.test_per_class", 1000))


def test_known_source_pools_match_the_debian_fashion_mnist():
    root = sources.DEBIAN_FASHION_MNIST
    if not (root / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    shape = KNOWN_SOURCES["fashion_mnist"]
    assert shape.class_names == sources.FASHION_MNIST_CLASSES
    for split, n in (("train", shape.train_per_class), ("t10k", shape.test_per_class)):
        labels = sources.read_idx(root / f"{split}-labels-idx1-ubyte.gz")
        assert np.bincount(labels).tolist() == [n] * shape.n_classes


def _tiny_source(test_per_class: int = 3) -> SourceData:
    """4 classes named c0..c3 (a CIFAR-layout copy names its classes otherwise than CIFAR)."""
    train = np.repeat(np.arange(4), 20)
    test = np.repeat(np.arange(4), test_per_class)
    images = {"train": np.zeros((len(train), 2, 2), np.uint8), "test": np.zeros((len(test), 2, 2), np.uint8)}
    return SourceData("tiny", ("c0", "c1", "c2", "c3"), {"train": train, "test": test}, images=images)


@pytest.mark.parametrize("key, value, message, fits", [
    ("test_per_class", 4, r"curation\.test_per_class: class 'c0' has 3 test images, fewer than test_per_class 4", 3),
    ("open_per_class", 5, r"curation\.open_per_class: class 'c3' has 3 test images, fewer than open_per_class 5", 3),
    ("open_classes", ["c3", "3"], r"curation\.open_classes: '3' names class 'c3', listed before", ["c3"]),
    ("known_classes", ["c0", "c1", "0"], r"curation\.known_classes: '0' names class 'c0', listed before",
     ["c0", "c1"]),
])
def test_curation_refuses_what_parse_time_cannot_know(key, value, message, fits):
    """Where class names and pool sizes come from the data, curation names the key; never a cap."""
    cur = {"n_max": 10, "imbalance_factor": 5, "val_per_class": 2,
           "open_classes": [] if key == "known_classes" else ["c3"]}
    with pytest.raises(DataError, match=message):
        curate(_tiny_source(), CurationConfig.from_dict({**cur, key: value}), seed=0)
    curate(_tiny_source(), CurationConfig.from_dict({**cur, key: fits}), seed=0)  # what the pool holds: accepted


def test_init_from_cycle_is_rejected():
    cfg = default_config()
    cfg["runs"] = {"a": {"method": "plain", "init_from": "b"}, "b": {"method": "plain", "init_from": "a"}}
    cfg["tsne"] = {"runs": []}
    with pytest.raises(ConfigError, match="cycle"):
        validate_config(cfg)


def test_check_config_reads_the_validated_config():
    """Defaults come from the schema only: check_config needs validate's filled-in config."""
    cfg = validate_config(default_config())
    check_config(cfg)
    raw = default_config()
    del raw["shots"]
    with pytest.raises(KeyError):
        check_config(raw)


# ------------------------------------------------------------------------------ schema vs code

SCHEMA_DOC = yaml.safe_load(SCHEMA.read_text())


def schema_block(*path: str) -> dict:
    """A block of the schema by its config path ('*' = any dataset), or a $defs entry."""
    if path[0] == "$defs":
        return SCHEMA_DOC["$defs"][path[1]]
    node = SCHEMA_DOC
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# (schema block, dataclass, keys only the schema has, fields only the dataclass has, whether the
# schema writes the defaults: then they must equal the dataclass's; else the dataclass owns them)
SCHEMA_DATACLASSES = {
    "curation": (("datasets", "*", "curation"), CurationConfig, {"seed"}, {"shots"}, True),  # seed: curate()'s
    "shots": (("$defs", "shots"), ShotConfig, set(), set(), True),
    "glyphs_source": (("$defs", "glyphs_source"), GlyphSettings, {"name"}, set(), False),
}


@pytest.mark.parametrize("block", sorted(SCHEMA_DATACLASSES))
def test_schema_and_dataclass_agree(block):
    path, cls, schema_only, class_only, with_defaults = SCHEMA_DATACLASSES[block]
    props = schema_block(*path)["properties"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(props) - schema_only == set(fields) - class_only, \
        f"{block}: schema-only {sorted(set(props) - schema_only - set(fields))}, " \
        f"{cls.__name__}-only {sorted(set(fields) - class_only - set(props))}"
    for name in set(props) & set(fields):
        if with_defaults:
            assert "default" in props[name], f"{block}.{name}: no default in the schema"
            ours, theirs = props[name]["default"], _field_default(fields[name])
            assert _frozen(ours) == _frozen(theirs), \
                f"{block}.{name}: schema default {ours!r}, {cls.__name__} {theirs!r}"
        else:
            assert "default" not in props[name], f"{block}.{name}: {cls.__name__} holds the default"
    if with_defaults:  # the block's own default, as validate fills it in, equals the dataclass's
        filled = schema_block(*path).get("default", {})
        for name, value in filled.items():
            assert _frozen(value) == _frozen(_field_default(fields[name])), f"{block}: default.{name}"


def _source_schema(name: str) -> dict:
    for rule in schema_block("datasets", "*", "source")["allOf"]:
        if rule["if"]["properties"]["name"]["const"] == name:
            return SCHEMA_DOC["$defs"][rule["then"]["$ref"].split("/")[-1]]
    raise AssertionError(f"the schema has no options block for source '{name}'")


def test_schema_names_every_registered_source():
    assert set(schema_block("datasets", "*", "source")["properties"]["name"]["enum"]) == \
        set(sources.available_sources())
    for name in sources.available_sources():
        _source_schema(name)


def _options_read(module: Path) -> dict[str, set[str]]:
    """{registered source: keys its factory reads from ``params`` (``params.get("k")`` /
    ``params["k"]``), through the module's helpers it calls}."""
    tree = ast.parse(module.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def direct(fn: ast.FunctionDef) -> tuple[set[str], set[str]]:
        keys, calls = set(), set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "params" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                keys.add(node.args[0].value)
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "params" \
                    and isinstance(node.slice, ast.Constant):
                keys.add(node.slice.value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs:
                calls.add(node.func.id)
        return keys, calls

    out = {}
    for fn in funcs.values():
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register_source":
                keys, todo, seen = set(), [fn.name], set()
                while todo:
                    name = todo.pop()
                    if name in seen:
                        continue
                    seen.add(name)
                    k, calls = direct(funcs[name])
                    keys |= k
                    todo += calls
                out[deco.args[0].value] = keys
    return out


def test_source_options_in_the_schema_are_those_the_sources_read():
    """A key the schema lacks would be refused though the source reads it; a key only the schema
    has would pass parse time and be ignored."""
    read = _options_read(Path(sources.__file__))
    owned_by_dataclass = {"glyphs"}  # options = GlyphSettings fields (test_schema_and_dataclass_agree)
    for name in sources.available_sources():
        if name in owned_by_dataclass:
            continue
        assert set(_source_schema(name)["properties"]) - {"name"} == read[name], name


def test_misspelt_source_option_is_named():
    cfg = default_config()
    cfg["datasets"]["fmnist_lt"]["source"]["rooot"] = "/data"
    with pytest.raises(ConfigError, match=r"datasets\.fmnist_lt\.source: .*'rooot'"):
        validate_config(cfg)


def test_augment_must_suit_every_dataset_of_the_run():
    """An in-memory dataset cannot decode files (resized_crop_flip); a streamed one cannot take the
    in-memory pad-and-crop (crop_flip)."""
    cfg = _set(default_config(), "datasets", {
        name: {**ds, "runs": ["plain"]} for name, ds in default_config()["datasets"].items()})
    validate_config(copy.deepcopy(cfg))
    with pytest.raises(ConfigError, match=r"^runs\.plain\.params\.augment: augment resized_crop_flip decodes"):
        validate_config(_set(cfg, "runs.plain.params.augment", "resized_crop_flip"))
    preset = yaml.safe_load((ROOT / "config/presets/oltr_imagenet_lt.yaml").read_text())
    validate_config(copy.deepcopy(preset))  # auto (and best_val) pass
    with pytest.raises(ConfigError, match=r"^runs\.plain\.params\.augment: augment crop_flip pads .*imagenet_lt"):
        validate_config(_set(preset, "runs.plain.params.augment", "crop_flip"))


@pytest.mark.parametrize("preset", ["oltr_imagenet_lt.yaml", "oltr_places_lt.yaml"])
def test_oltr_paper_f_measure_sits_beside_the_2019_definition(preset):
    """OLTR's README: the paper's F-measures came from the code before its 29 Jan 2020 fix."""
    cfg = yaml.safe_load((ROOT / "config" / "presets" / preset).read_text())
    for per_run in cfg["paper_results"].values():
        for figures in per_run.values():
            assert figures["open/overall/f_measure_oltr2019"] == figures["open/overall/f_measure"]
    assert cfg["open_threshold"] == 0.1  # the paper's fixed threshold, not the val_tpr rule
