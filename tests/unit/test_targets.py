"""longtail.targets: the outputs, figure selections, parent edges and figure-setting checks that the
rules are built from, on configs validated as Snakemake does (schema defaults filled in)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from longtail import targets as T
from longtail.config_check import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[2]
LENET = {"backbone": "lenet5", "epochs": 1}


def toy() -> dict:
    """Two datasets (the second trains three runs only) and one run of each family."""
    cur = {"n_max": 100, "imbalance_factor": 10, "open_classes": ["Bag"]}
    return {
        "seeds": [3, 4],
        "open_threshold": 0.2,
        "datasets": {
            "a": {"source": {"name": "fashion_mnist"}, "curation": dict(cur), "open_threshold": 0.4},
            "b": {"source": {"name": "fashion_mnist"}, "curation": {**cur, "imbalance_factor": 20},
                  "runs": ["plain", "mfm_transfer", "oltr"]},
        },
        "runs": {
            "plain": {"method": "plain", "params": LENET},
            "oversample": {"method": "plain", "params": {**LENET, "sampler": "oversample"}},
            "mmn": {"method": "metamodelnet", "init_from": "plain"},
            "mmn_fix": {"method": "metamodelnet", "init_from": "plain", "params": {"split": "fix"}},
            "mmn_reg": {"method": "metamodelnet", "init_from": "plain", "params": {"split": "regression"}},
            "mfm": {"method": "mfm", "params": LENET},
            "mfm_phi": {"method": "mfm", "params": {**LENET, "modulator": "phi", "meta_optimizer": "sgd"}},
            "mfm_transfer": {"method": "mfm", "params": {**LENET, "modulator_from": {"dataset": "a", "run": "mfm"}}},
            "kt_backbone": {"method": "plain", "params": {**LENET, "head": "cosine"}},
            "kt_wh": {"method": "kt", "init_from": "kt_backbone", "params": {"classifier": "wh"}},
            "oltr": {"method": "oltr", "init_from": "plain", "params": LENET},
        },
        "tsne": {"runs": ["plain", "mfm"]},
        "kt_figures": {"runs": ["kt_wh"]},
        "oltr_figures": {"tsne_runs": ["plain", "oltr"], "threshold_runs": ["plain", "oltr", "mmn"],
                         "longtail_datasets": ["a", "b"], "longtail_runs": ["plain", "oltr"],
                         "open_classes_datasets": ["b"], "open_classes_runs": ["oltr", "mmn"]},
    }


@pytest.fixture
def cfg() -> dict:
    return validate_config(toy())


def shipped(path: str) -> dict:
    return validate_config(yaml.safe_load((ROOT / path).read_text()))


# ------------------------------------------------------------------------------ config access


def test_get_config_reads_nested_keys_and_names_a_missing_one(cfg):
    assert T.get_config(cfg, "shots", "few") == 20  # a schema default
    assert T.get_config(cfg, "mfm_figures", "runs") is None  # present, null
    with pytest.raises(KeyError, match="shots.fwe"):
        T.get_config(cfg, "shots", "fwe")
    with pytest.raises(KeyError, match="nope"):
        T.get_config(cfg, "nope", "deeper")
    assert T.get_config(cfg, "shots", "fwe", default=7) == 7


def test_runs_of_thresholds_and_seed(cfg):
    assert T.runs_of(cfg, "a") == list(cfg["runs"])
    assert T.runs_of(cfg, "b") == ["plain", "mfm_transfer", "oltr"]
    assert T.open_threshold(cfg, "a") == 0.4 and T.open_threshold(cfg, "b") == 0.2
    assert T.first_seed(cfg) == 3


# ------------------------------------------------------------------------------ job params


def test_job_params_hold_what_outputs_depend_on_only(cfg):
    """No label, description or runs list reaches curate's or train's params (Snakemake reruns a
    job whose params changed); key order does not count."""
    cfg["runs"]["mmn"]["label"] = "MetaModelNet"
    assert T.run_training(cfg, "mmn") == {"method": "metamodelnet", "params": {}, "init_from": "plain"}
    assert list(T.run_training(cfg, "oltr")["params"]) == ["backbone", "epochs"]  # sorted
    assert T.curation(cfg, "b") == T.canonical(cfg["datasets"]["b"]["curation"])
    assert T.data_source(cfg, "a") == T.canonical(cfg["datasets"]["a"]["source"])
    assert T.canonical({"b": [{"d": 1, "c": 2}], "a": None}) == {"a": None, "b": [{"c": 2, "d": 1}]}
    assert list(T.canonical({"b": 1, "a": 2})) == ["a", "b"]


def test_table_runs_are_the_dataset_runs_labels_in_config_order(cfg):
    cfg["runs"]["oltr"]["label"] = "OLTR"
    assert T.table_runs(cfg, "b") == {"plain": {"label": ""}, "mfm_transfer": {"label": ""},
                                      "oltr": {"label": "OLTR"}}
    assert list(T.table_runs(cfg, "a")) == list(cfg["runs"])


def test_config_subset(cfg):
    assert T.config_subset(cfg, "tsne", ("perplexity", "max_points")) == {"perplexity": 30, "max_points": 2000}
    with pytest.raises(KeyError):
        T.config_subset(cfg, "tsne", ("perplexty",))


# ------------------------------------------------------------------------------ predicates


def test_family_predicates(cfg):
    runs = cfg["runs"]
    assert [r for r in runs if T.is_kt(runs[r])] == ["kt_wh"]
    assert [r for r in runs if T.is_metamodelnet(runs[r])] == ["mmn", "mmn_fix", "mmn_reg"]
    assert [r for r in runs if T.has_mmn_chain(runs[r])] == ["mmn", "mmn_fix"]
    assert [r for r in runs if T.learns_modulator(runs[r])] == ["mfm"]
    assert T.modulator_from(runs["mfm_transfer"]) == {"dataset": "a", "run": "mfm"}
    assert T.modulator_from(runs["mfm"]) is None


# ------------------------------------------------------------------------------ parent edges


def test_parent_edges(cfg):
    assert T.parent_model(cfg, "a", "mmn", 3) == "results/train/a/plain/seed3/model.pt"
    assert T.parent_features(cfg, "a", "mmn", "3") == "results/features/a/plain/seed3.parquet"
    # MFM's transfer reads the modulator of a run on another dataset, same seed; no features
    assert T.parent_model(cfg, "b", "mfm_transfer", 4) == "results/train/a/mfm/seed4/model.pt"
    assert T.parent_features(cfg, "b", "mfm_transfer", 4) is None
    assert T.parent_model(cfg, "a", "plain", 3) is None and T.parent_features(cfg, "a", "plain", 3) is None


# ------------------------------------------------------------------------------ selections


def test_family_run_selections(cfg):
    assert T.tsne_runs(cfg, "a") == ["plain", "mfm"] and T.tsne_runs(cfg, "b") == ["plain"]
    assert T.kt_figure_runs(cfg, "a") == ["kt_wh"] and T.kt_figure_runs(cfg, "b") == []
    assert T.mmn_runs(cfg, "a") == ["mmn", "mmn_fix", "mmn_reg"]
    assert T.mmn_dynamics_runs(cfg, "a") == ["mmn", "mmn_fix"]
    assert T.mmn_gain_runs(cfg, "a") == ["plain", "oversample", "mmn", "mmn_fix", "mmn_reg"]
    assert T.mfm_figure_runs(cfg, "a") == ["mfm"]  # runs: null = every run learning a modulator
    assert T.mfm_figure_runs(cfg, "b") == []  # the transfer run's modulator is frozen
    assert T.mfm_confusion_runs(cfg, "a") == ["mfm"]  # confusion_runs: null = the t-SNE runs
    assert T.oltr_tsne_runs(cfg, "a") == ["plain", "oltr"] and T.oltr_tsne_runs(cfg, "b") == ["plain", "oltr"]
    assert T.oltr_threshold_runs(cfg, "a") == ["plain", "oltr", "mmn"]
    assert T.oltr_threshold_runs(cfg, "b") == ["plain", "oltr"]


def test_selections_follow_explicit_lists(cfg):
    cfg["mfm_figures"].update(runs=["mfm"], confusion_runs=["mfm_phi", "oltr"])
    assert T.mfm_confusion_runs(cfg, "a") == ["mfm_phi", "oltr"] and T.mfm_confusion_runs(cfg, "b") == ["oltr"]
    cfg["datasets"]["b"]["runs"] = ["oltr"]  # a Fig. 3 pair needs both runs trained
    assert T.oltr_tsne_runs(cfg, "b") == []


def test_oltr_cross_dataset_items_and_axis(cfg):
    assert T.oltr_items(cfg, "longtailness") == [
        ("a", "plain", 3), ("a", "plain", 4), ("a", "oltr", 3), ("a", "oltr", 4),
        ("b", "plain", 3), ("b", "plain", 4), ("b", "oltr", 3), ("b", "oltr", 4)]
    assert T.oltr_items(cfg, "open_classes") == [("b", "oltr", 3), ("b", "oltr", 4)]  # mmn is not trained on b
    assert T.oltr_longtail_axis(cfg) == ({"a": 10, "b": 20}, "imbalance factor n_max / n_min", True)
    for d in ("a", "b"):
        cfg["datasets"][d]["curation"].update(profile="pareto", pareto_alpha=3 if d == "a" else 6)
    xs, label, log_x = T.oltr_longtail_axis(cfg)
    assert xs == {"a": 3, "b": 6} and label.startswith("Pareto alpha") and not log_x


# ------------------------------------------------------------------------------ outputs


def test_outputs_of_the_toy_config(cfg):
    assert T.tables(cfg) == [f"results/tables/{d}.{e}" for d in "ab" for e in ("md", "csv", "tex")] + [
        "results/tables/summary.parquet"]
    assert T.dataset_metrics(cfg, "b") == [f"results/metrics/b/{r}/seed{s}.parquet"
                                          for r in ("plain", "mfm_transfer", "oltr") for s in (3, 4)]
    assert len(T.all_metrics(cfg)) == 2 * (len(cfg["runs"]) + 3)
    fa, fb = "results/figures/a", "results/figures/b"
    assert T.figures(cfg) == [
        f"{fa}/class_distribution.png", f"{fa}/sample_grid.png", f"{fa}/tsne_plain_seed3.png",
        f"{fa}/tsne_mfm_seed3.png",
        f"{fb}/class_distribution.png", f"{fb}/sample_grid.png", f"{fb}/tsne_plain_seed3.png",
        f"{fa}/mmn_dynamics_mmn_seed3.png", f"{fa}/mmn_dynamics_mmn_fix_seed3.png", f"{fa}/mmn_gain_seed3.png",
        f"{fa}/kt_embedding_kt_wh_seed3.png", f"{fa}/kt_attention_kt_wh_seed3.png",
        f"{fa}/oltr_tsne_seed3.png", f"{fa}/oltr_threshold_sweep.png",
        f"{fb}/oltr_tsne_seed3.png", f"{fb}/oltr_threshold_sweep.png",
        "results/figures/oltr/longtailness.png", "results/figures/oltr/open_classes.png",
        f"{fa}/mfm_gamma_beta_mfm_seed3.png", f"{fa}/mfm_confusion_mfm_seed3.png",
    ]
    assert T.final_outputs(cfg) == T.tables(cfg) + T.figures(cfg)


def test_figures_need_their_base_run(cfg):
    cfg["datasets"]["a"]["runs"] = ["mfm", "mmn"]  # neither plain (MFM and MMN's base) nor oversample
    figs = T.figures(cfg)
    assert "results/figures/a/mfm_gamma_beta_mfm_seed3.png" in figs
    assert not any("mfm_confusion" in f or "mmn_gain" in f for f in figs)


def test_default_config_targets():
    """The default experiment's target: every table and figure of config.yaml."""
    cfg = shipped("config.yaml")
    f = "results/figures/glyph_lt"
    assert T.final_outputs(cfg) == [
        "results/tables/glyph_lt.md", "results/tables/glyph_lt.csv", "results/tables/glyph_lt.tex",
        "results/tables/summary.parquet", f"{f}/class_distribution.png", f"{f}/sample_grid.png",
        f"{f}/tsne_plain_seed0.png",
        f"{f}/mmn_dynamics_metamodelnet_seed0.png", f"{f}/mmn_dynamics_metamodelnet_fix_split_seed0.png",
        f"{f}/mmn_gain_seed0.png", f"{f}/kt_embedding_kt_wh_seed0.png", f"{f}/kt_attention_kt_wh_seed0.png",
        f"{f}/oltr_tsne_seed0.png", f"{f}/oltr_threshold_sweep.png", f"{f}/mfm_gamma_beta_mfm_seed0.png",
        f"{f}/mfm_confusion_mfm_seed0.png",
    ]


# ------------------------------------------------------------------------------ checks


def _with(mutate) -> dict:
    cfg = copy.deepcopy(toy())
    mutate(cfg)
    return cfg


def _run(cfg: dict, name: str, **entry) -> None:
    cfg["runs"][name] = entry


# id: (mutation of toy(), text the one-line error must hold)
BAD = {
    "kt_figures_not_kt": (lambda c: c["kt_figures"].update(runs=["plain"]), "kt_figures.runs: 'plain'"),
    "kt_figures_unknown": (lambda c: c["kt_figures"].update(runs=["ghost"]), "kt_figures.runs: 'ghost'"),
    "kt_figures_no_attention": (
        lambda c: (c["runs"].update(kt_prototypes={"method": "kt", "init_from": "kt_backbone",
                                                   "params": {"classifier": "prototypes"}}),
                   c["kt_figures"].update(runs=["kt_prototypes"])),
        "kt_figures.runs: 'kt_prototypes' is not a kt run with an attention"),
    "mfm_figures_unknown": (lambda c: c.update(mfm_figures={"runs": ["ghost"]}),
                            "mfm_figures.runs: no run named 'ghost'"),
    "mfm_confusion_unknown": (lambda c: c.update(mfm_figures={"confusion_runs": ["ghost"]}),
                              "mfm_figures.confusion_runs: no run named 'ghost'"),
    "mfm_figures_no_modulator": (lambda c: c.update(mfm_figures={"runs": ["mfm_phi"]}), "mfm_figures.runs: 'mfm_phi'"),
    "modulator_and_init_from": (lambda c: c["runs"]["mfm_transfer"].update(init_from="plain"),
                                "runs.mfm_transfer.params.modulator_from: set either init_from or modulator_from"),
    "modulator_dataset_unknown": (lambda c: c["runs"]["mfm_transfer"]["params"]["modulator_from"].update(dataset="z"),
                                  "runs.mfm_transfer.params.modulator_from.dataset: no dataset named 'z'"),
    "modulator_run_unknown": (lambda c: c["runs"]["mfm_transfer"]["params"]["modulator_from"].update(run="ghost"),
                              "runs.mfm_transfer.params.modulator_from.run: no run named 'ghost'"),
    "modulator_run_is_phi": (lambda c: c["runs"]["mfm_transfer"]["params"]["modulator_from"].update(run="mfm_phi"),
                             "modulator_from.run: 'mfm_phi' must be an mfm run that learns its own modulator"),
    "modulator_run_not_trained_there": (
        lambda c: c["runs"]["mfm_transfer"]["params"]["modulator_from"].update(dataset="b"),
        "run 'mfm' is not trained on dataset 'b'"),
    "oltr_tsne_unknown": (lambda c: c["oltr_figures"].update(tsne_runs=["plain", "ghost"]),
                          "oltr_figures.tsne_runs: no run named 'ghost'"),
    "oltr_tsne_one_run": (lambda c: c["oltr_figures"].update(tsne_runs=["plain"]),
                          "oltr_figures.tsne_runs: name two runs"),
    "oltr_threshold_unknown": (lambda c: c["oltr_figures"].update(threshold_runs=["ghost"]),
                               "oltr_figures.threshold_runs: no run named 'ghost'"),
    "oltr_longtail_run_unknown": (lambda c: c["oltr_figures"].update(longtail_runs=["ghost"]),
                                  "oltr_figures.longtail_runs: no run named 'ghost'"),
    "oltr_longtail_dataset_unknown": (lambda c: c["oltr_figures"].update(longtail_datasets=["z"]),
                                      "oltr_figures.longtail_datasets: no dataset named 'z'"),
    "oltr_longtail_mixed_profiles": (lambda c: c["datasets"]["b"]["curation"].update(profile="pareto"),
                                     "oltr_figures.longtail_datasets: mix pareto"),
    "oltr_open_classes_dataset_unknown": (lambda c: c["oltr_figures"].update(open_classes_datasets=["z"]),
                                          "oltr_figures.open_classes_datasets: no dataset named 'z'"),
    "oltr_open_classes_without_open_set": (lambda c: c["datasets"]["b"]["curation"].update(open_classes=[]),
                                           "oltr_figures.open_classes_datasets: 'b' has no open_classes"),
    "oltr_open_classes_run_unknown": (lambda c: c["oltr_figures"].update(open_classes_runs=["ghost"]),
                                      "oltr_figures.open_classes_runs: no run named 'ghost'"),
}


def test_toy_config_passes():
    T.check_targets(validate_config(toy()))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_figure_settings_fail_with_one_line_naming_the_key(case):
    mutate, needle = BAD[case]
    with pytest.raises(ConfigError) as err:
        validate_config(_with(mutate))
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg


def test_runs_of_an_unused_cross_dataset_figure_are_not_checked():
    cfg = _with(lambda c: c["oltr_figures"].update(longtail_datasets=[], longtail_runs=["ghost"]))
    validate_config(cfg)


@pytest.mark.parametrize("path", ["config.yaml", *sorted(str(p.relative_to(ROOT)) for p in
                                                          (ROOT / "config" / "presets").glob("*.yaml"))])
def test_shipped_configs_pass_the_checks(path):
    T.check_targets(shipped(path))


def test_targets_import_no_torch():
    code = "import sys, longtail.targets; sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "workflow_scripts", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "longtail.targets imported torch"


def test_a_dataset_shots_block_overrides_the_global_one(cfg):
    cfg = copy.deepcopy(cfg)
    d = next(iter(cfg["datasets"]))
    assert T.shots(cfg, d) == {"many": 100, "few": 20, "convention": "strict"}
    cfg["datasets"][d]["shots"] = {"convention": "inclusive", "few": 10}
    cfg = validate_config(cfg)  # the schema fills the dataset block's missing keys in
    assert T.shots(cfg, d) == {"many": 100, "few": 10, "convention": "inclusive"}


def test_the_classifier_alone_has_no_chain_to_draw_but_is_in_the_gain_figure(cfg):
    cfg["runs"]["mmn_alone"] = {"method": "metamodelnet", "init_from": "plain", "label": "",
                                "params": {"apply_metanet": False}}
    assert not T.has_mmn_chain(cfg["runs"]["mmn_alone"])  # no meta-network is trained
    assert T.has_mmn_chain(cfg["runs"]["mmn"])
    assert T.mmn_dynamics_runs(cfg, "a") == ["mmn", "mmn_fix"]
    assert T.mmn_gain_runs(cfg, "a")[-1] == "mmn_alone"
