"""Malformed configs fail at parse time, before any job runs, with one line naming the key.

Every case goes through the same two checks the Snakefile runs (the JSON schema through
``snakemake.utils.validate``, then ``longtail.config_check``) in-process; a few representative
ones also go through a real ``snakemake -n`` to prove the workflow stops before any job.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from longtail.config_check import ConfigError, check_config, schema_error_line

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "rules" / "schemas" / "config.schema.yaml")
SMOKE = yaml.safe_load((ROOT / "tests" / "configs" / "smoke.yaml").read_text())
DS = "fmnist_smoke"


def _set(path: str, value) -> Callable[[dict], None]:
    """Mutation that sets a dotted key (creating mappings on the way)."""
    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return mutate


def _del(path: str) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        del node[last]
    return mutate


def _many(*fns: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        for fn in fns:
            fn(cfg)
    return mutate


CUR = f"datasets.{DS}.curation"
SRC = f"datasets.{DS}.source"
# id: (mutation, text that must appear in the one-line error: the key, and for lists the value)
CASES: dict[str, tuple[Callable[[dict], None], list[str]]] = {
    "unknown_method": (_set("runs.plain.method", "magic_net"), ["runs.plain", "method", "magic_net"]),
    "negative_imbalance": (_set(f"{CUR}.imbalance_factor", -5), [f"{CUR}.imbalance_factor", "-5"]),
    "imbalance_leaves_empty_class": (_set(f"{CUR}.imbalance_factor", 1000), [f"{CUR}.imbalance_factor"]),
    "missing_dataset_source": (_del(f"datasets.{DS}.source"), [f"datasets.{DS}", "source"]),
    "open_class_also_known": (_set(f"{CUR}.known_classes", ["Bag", "Trouser", "Coat"]),
                              [f"{CUR}.open_classes", "Bag", "known_classes"]),
    "unknown_class_name": (_set(f"{CUR}.open_classes", ["Hat"]), [f"{CUR}", "Hat"]),
    "shots_out_of_order": (_set("shots", {"many": 10, "few": 50}), ["shots", "few", "many"]),
    "meta_set_above_pool": (_many(_set(f"{CUR}.meta_per_class", 5950), _set(f"{CUR}.meta_mode", "disjoint")),
                            [f"{CUR}.meta_per_class", "training images per class"]),
    "unknown_backbone": (_set("runs.plain.params.backbone", "vgg99"), ["runs.plain", "backbone", "vgg99"]),
    "unknown_sampler": (_set("runs.plain.params.sampler", "lottery"), ["runs.plain", "sampler", "lottery"]),
    "bad_init_from": (_set("runs.plain.init_from", "ghost"), ["runs.plain.init_from", "ghost"]),
    "init_from_cycle": (_many(_set("runs.plain.init_from", "other"),
                              _set("runs.other", {"method": "plain", "init_from": "plain"})),
                        ["init_from", "cycle"]),
    "unknown_param": (_set("runs.plain.params.learning_rate", 0.1), ["runs.plain", "learning_rate"]),
    "zero_epochs": (_set("runs.plain.params.epochs", 0), ["runs.plain", "epochs"]),
    "negative_lr": (_set("runs.plain.params.lr", -0.1), ["runs.plain", "lr"]),
    "open_threshold_above_one": (_set("open_threshold", 1.5), ["open_threshold", "1.5"]),
    "dataset_open_threshold_zero": (_set(f"datasets.{DS}.open_threshold", 0), [f"datasets.{DS}.open_threshold"]),
    "unknown_top_level_key": (_set("sedes", [0]), ["sedes"]),
    "unknown_curation_key": (_set(f"{CUR}.imbalance", 10), ["imbalance", f"{CUR}"]),
    "duplicate_seeds": (_set("seeds", [0, 1, 0]), ["seeds", "repeat"]),
    "negative_seed": (_set("seeds", [-1]), ["seeds.0", "-1"]),
    "tsne_run_unknown": (_set("tsne.runs", ["nope"]), ["tsne.runs", "nope"]),
    "dataset_runs_unknown": (_set(f"datasets.{DS}.runs", ["nope"]), [f"datasets.{DS}.runs", "nope"]),
    "unknown_profile": (_set(f"{CUR}.profile", "zipf"), [f"{CUR}.profile", "zipf"]),
    "bad_device": (_set("device", "tpu"), ["device", "tpu"]),
    "bad_dataset_name": (_set("datasets.Fashion-LT", copy.deepcopy(SMOKE["datasets"][DS])), ["Fashion-LT"]),
    "paper_results_unknown_run": (_set(f"paper_results.{DS}", {"nope": {"closed/overall/top1": 50}}),
                                  [f"paper_results.{DS}.nope"]),
    "missing_runs": (_del("runs"), ["runs"]),
    # source options are typed per source: a misspelt or foreign key is refused, by name
    "misspelt_source_option": (_set(f"{SRC}.rooot", "/data"), [SRC, "rooot"]),
    "option_of_another_source": (_set(f"{SRC}.train_dir", "train"), [SRC, "train_dir"]),
    "unknown_source": (_set(f"{SRC}.name", "mnist"), [f"{SRC}.name", "mnist"]),
    "image_folder_without_root": (_set(SRC, {"name": "image_folder", "train_dir": "train"}), [SRC, "root"]),
    "image_list_without_test_list": (_set(SRC, {"name": "image_list", "root": "/data", "lists": {"train": "t.txt"}}),
                                     [f"{SRC}.lists", "test"]),
    "image_size_not_integer": (_set(SRC, {"name": "image_folder", "root": "/data", "image_size": "big"}),
                               [f"{SRC}.image_size", "big"]),
    # figure settings and the modulator edge (longtail.targets)
    "kt_figures_run_not_kt": (_set("kt_figures.runs", ["plain"]), ["kt_figures.runs", "plain"]),
    "oltr_tsne_run_unknown": (_set("oltr_figures.tsne_runs", ["plain", "ghost"]), ["oltr_figures.tsne_runs", "ghost"]),
    "mfm_figures_run_unknown": (_set("mfm_figures.runs", ["ghost"]), ["mfm_figures.runs", "ghost"]),
    "modulator_from_unknown_dataset": (
        _set("runs.mfm", {"method": "mfm", "params": {"modulator_from": {"dataset": "nowhere", "run": "plain"}}}),
        ["runs.mfm.params.modulator_from.dataset", "nowhere"]),
    # method parameters are typed strictly (bool is not an int, 1.5 is not an integer) and finite
    "epochs_fraction": (_set("runs.plain.params.epochs", 1.5),
                        ["runs.plain.params.epochs: expected an integer, got 1.5", "write e.g."]),
    "epochs_bool": (_set("runs.plain.params.epochs", True),
                    ["runs.plain.params.epochs: expected an integer, got true"]),
    "epochs_word": (_set("runs.plain.params.epochs", "ten"),
                    ["runs.plain.params.epochs: expected an integer, got 'ten'"]),
    "lr_bool": (_set("runs.plain.params.lr", True), ["runs.plain.params.lr: expected a number, got true"]),
    "lr_nan": (_set("runs.plain.params.lr", float("nan")),
               ["runs.plain.params.lr: expected a finite number, got .nan"]),
    "lr_inf": (_set("runs.plain.params.lr", float("inf")),
               ["runs.plain.params.lr: expected a finite number, got .inf"]),
    "backbone_number": (_set("runs.plain.params.backbone", 18),
                        ["runs.plain.params.backbone: expected a string, got 18"]),
    "nesterov_word": (_set("runs.plain.params.nesterov", "yes"),
                      ["runs.plain.params.nesterov: expected true or false, got 'yes'"]),
    "milestones_fraction": (_set("runs.plain.params.milestones", [3, 4.5]),
                            ["runs.plain.params.milestones: expected a list of integers"]),
    "loss_param_nan": (_set("runs.plain.params.loss_params", {"beta": float("nan")}),
                       ["runs.plain.params.loss_params: expected finite numbers", ".nan"]),
    "child_epochs_bool": (_set("runs.crt", {"method": "crt", "init_from": "plain", "params": {"epochs": True}}),
                          ["runs.crt.params.epochs: expected an integer, got true"]),
    # every other number: finite, and an integer where the schema says integer (it accepts 5.0)
    "imbalance_nan": (_set(f"{CUR}.imbalance_factor", float("nan")),
                      [f"{CUR}.imbalance_factor: expected a finite number, got .nan"]),
    "open_threshold_inf": (_set("open_threshold", float("inf")), ["open_threshold", "inf"]),
    "val_per_class_fraction_zero": (_set(f"{CUR}.val_per_class", 5.0),
                                    [f"{CUR}.val_per_class: expected an integer, got 5.0; write 5"]),
    # paper_results: {dataset: {run: {metric: number in %}}}
    "paper_result_word": (_set(f"paper_results.{DS}", {"plain": {"closed/overall/top1": "high"}}),
                          [f"paper_results.{DS}.plain.closed/overall/top1", "'high'", "number"]),
    "paper_result_bool": (_set(f"paper_results.{DS}", {"plain": {"closed/overall/top1": True}}),
                          [f"paper_results.{DS}.plain.closed/overall/top1", "number"]),
    "paper_result_not_percent": (_set(f"paper_results.{DS}", {"plain": {"closed/overall/top1": 731}}),
                                 [f"paper_results.{DS}.plain.closed/overall/top1", "731", "100"]),
    "paper_result_without_metric": (_set(f"paper_results.{DS}", {"plain": 73.1}),
                                    [f"paper_results.{DS}.plain", "object"]),
    # a key no table column shows would never appear beside ours: named, with the valid columns
    "paper_result_not_a_column": (_set(f"paper_results.{DS}", {"plain": {"closed/overall/mean_class_acc": 48.0}}),
                                  [f"paper_results.{DS}.plain.closed/overall/mean_class_acc: not a table column",
                                   "closed/overall/top1", "open/overall/auroc"]),
    "paper_result_split_column_without_split": (
        _set(f"paper_results.{DS}", {"plain": {"test_reversed/closed/overall/error": 20.0}}),
        [f"paper_results.{DS}.plain.test_reversed/closed/overall/error: not a table column"]),
    # feasibility against Fashion-MNIST's 6000 train / 1000 test images per class
    "val_per_class_above_pool": (_set(f"{CUR}.val_per_class", 6000),
                                 [f"{CUR}.val_per_class: each class needs 6000 validation", "6000 training images"]),
    "n_max_above_pool": (_set(f"{CUR}.n_max", 6000), [f"{CUR}.n_max", "lower n_max to 5995 or less"]),
    "meta_carve_out_above_pool": (_many(_set(f"{CUR}.meta_per_class", 5990), _set(f"{CUR}.meta_mode", "disjoint")),
                                  [f"{CUR}.meta_per_class", "5990 meta"]),
    "test_per_class_above_pool": (_set(f"{CUR}.test_per_class", 5000),
                                  [f"{CUR}.test_per_class: 5000 is more than the 1000 test images", "null"]),
    "open_per_class_above_pool": (_set(f"{CUR}.open_per_class", 1500), [f"{CUR}.open_per_class", "1500", "1000"]),
    "cifar100_n_max_above_pool": (_many(_set(SRC, {"name": "cifar100"}), _set(f"{CUR}.open_classes", []),
                                        _set(f"{CUR}.n_max", 500)), [f"{CUR}.n_max", "cifar100", "500"]),
    "source_name_typo": (_set(f"{SRC}.name", "fashion-mnist"), [f"{SRC}.name", "'fashion-mnist'", "fashion_mnist"]),
    # a class listed twice, also by name and by index
    "open_class_by_name_and_index": (_set(f"{CUR}.open_classes", ["Bag", 8]),
                                     [f"{CUR}.open_classes: 'Bag' and 8 name the same class"]),
    "open_class_twice": (_set(f"{CUR}.open_classes", ["Bag", "Bag"]), [f"{CUR}.open_classes: 'Bag' is listed twice"]),
    "known_class_by_name_and_index": (_set(f"{CUR}.known_classes", ["Coat", "Dress", 4]),
                                      [f"{CUR}.known_classes", "'Coat' and 4"]),
    "open_class_index_out_of_range": (_set(f"{CUR}.open_classes", [10]), [f"{CUR}.open_classes", "10", "0-9"]),
    "open_class_index_also_known": (_set(f"{CUR}.known_classes", [8, 0, 1]), [f"{CUR}.open_classes", "known_classes"]),
    "image_folder_class_twice": (_many(_set(SRC, {"name": "image_folder", "root": "/data"}),
                                       _set(f"{CUR}.open_classes", ["cat", "cat"])),
                                 [f"{CUR}.open_classes", "'cat' is listed twice"]),
    "glyph_class_by_name_and_index": (_many(_set(SRC, {"name": "glyphs", "classes": ["A", "B", "C", "D"]}),
                                            _set(f"{CUR}.open_classes", ["D", 3])),
                                      [f"{CUR}.open_classes", "'D' and 3"]),
}


def config_error(cfg: dict) -> str | None:
    """The one-line error the Snakefile would raise for ``cfg``, or None if it is accepted."""
    try:
        validate(cfg, SCHEMA)
    except WorkflowError as exc:
        return schema_error_line(exc)
    try:
        check_config(cfg)
    except ConfigError as exc:
        return str(exc)
    return None


def mutated(case: str) -> dict:
    cfg = copy.deepcopy(SMOKE)
    CASES[case][0](cfg)
    return cfg


def test_smoke_config_is_valid() -> None:
    assert config_error(copy.deepcopy(SMOKE)) is None


def test_enough_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_config_fails_with_one_line_naming_the_key(case: str) -> None:
    msg = config_error(mutated(case))
    assert msg is not None, f"{case}: config was accepted"
    assert "\n" not in msg.strip(), f"{case}: error is not one line:\n{msg}"
    for needle in CASES[case][1]:
        assert needle in msg, f"{case}: '{needle}' missing from: {msg}"


# Through the real workflow: parse-time failure, no job, no results/ directory.
DRY_RUN_CASES = ["unknown_method", "negative_imbalance", "missing_dataset_source", "meta_set_above_pool",
                 "misspelt_source_option", "epochs_bool", "lr_nan", "paper_result_word", "test_per_class_above_pool",
                 "open_class_by_name_and_index"]


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Run the `snakemake -n` in parallel (each ~2-5 s of parse time)."""
    smk = str(Path(sys.executable).with_name("snakemake"))
    procs = {}
    for case in DRY_RUN_CASES:
        work = tmp_path_factory.mktemp(case)
        cfg = work / "config.yaml"
        cfg.write_text(yaml.safe_dump(mutated(case)))
        procs[case] = (work, subprocess.Popen(
            [smk, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(cfg), "-n", "--cores", "1"],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"}))
    out = {}
    for case, (work, p) in procs.items():
        text, _ = p.communicate(timeout=300)
        out[case] = (p.returncode, text, work)
    return out


@pytest.mark.parametrize("case", DRY_RUN_CASES)
def test_snakemake_stops_at_parse_time(case: str, dry_runs: dict) -> None:
    rc, out, work = dry_runs[case]
    assert rc != 0, out[-2000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("config error:")]
    assert len(lines) == 1, f"expected one 'config error:' line:\n{out[-2000:]}"
    for needle in CASES[case][1]:
        assert needle in lines[0], f"'{needle}' missing from: {lines[0]}"
    assert "Job stats" not in out and "rule " not in out, "jobs were scheduled"
    assert not (work / "results").exists(), "a results/ directory was created"
