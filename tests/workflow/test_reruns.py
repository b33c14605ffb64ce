"""What a config edit reruns, on a finished tiny workflow, with Snakemake's default rerun triggers
(mtime, params, input, code, software-env) as a user runs it: presentation keys (labels,
descriptions, open_threshold, a dataset's runs list, figure settings) never re-curate or retrain
(inference is part of the train job); a training parameter reruns its run and the runs that start from it, nothing else.
And SIGINT to the Snakemake process alone lets the running training job finish and count.
"""

from __future__ import annotations

import copy
import re
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import yaml

from smk_runs import SMOKE, env, job_processes, run_smk, smk_cmd, wait_for, write_config

pytestmark = pytest.mark.slow

DATASET = "fmnist_smoke"
HEAVY = {"curate", "train"}  # the jobs a presentation edit must never plan
Edit = Callable[[dict], None]


def finished_config() -> dict:
    """tests/configs/smoke.yaml at 1 epoch: plain, crt on plain's backbone, and `extra`, defined
    but not trained on the dataset (its runs list names the first two); a small t-SNE of plain."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["datasets"][DATASET]["runs"] = ["plain", "crt"]
    cfg["runs"] = {
        "plain": {"method": "plain", "label": "Plain CE", "params": {"epochs": 1, "batch_size": 64, "lr": 0.1}},
        "crt": {"method": "crt", "init_from": "plain", "label": "cRT", "params": {"epochs": 1}},
        "extra": {"method": "plain", "params": {"epochs": 1, "batch_size": 64, "sampler": "sqrt"}},
    }
    cfg["tsne"] = {"runs": ["plain"], "max_points": 60, "perplexity": 5}
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory where the whole default target of :func:`finished_config` is built."""
    root = tmp_path_factory.mktemp("reruns")
    work = root / "work"
    proc = run_smk(work, write_config(finished_config(), root / "config.yaml"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    return work


def planned(work: Path, cfg: dict, name: str, targets: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """(rule, run or dataset) of every job ``snakemake -n`` plans in ``work`` with ``cfg``."""
    path = write_config(cfg, work.parent / f"{name}.yaml")
    proc = subprocess.run(smk_cmd(work, path, targets, extra=["--dry-run"]), cwd=work, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    jobs = set()
    for block in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", proc.stdout, flags=re.M):
        rule, body = block.group(1), block.group(2)
        if rule == "all":
            continue
        wildcards = re.search(r"^    wildcards: (.*)$", body, flags=re.M)
        values = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {}
        jobs.add((rule, values.get("run", values.get("dataset", ""))))
    return jobs


def edited(edit: Edit) -> dict:
    cfg = copy.deepcopy(finished_config())
    edit(cfg)
    return cfg


def test_unchanged_config_plans_nothing(finished: Path) -> None:
    assert planned(finished, finished_config(), "unchanged") == set()


def reorder_keys(runs: dict) -> None:
    """The same runs with the keys of each entry and of its params in reverse order."""
    for name, entry in runs.items():
        runs[name] = {k: dict(reversed(v.items())) if k == "params" else v for k, v in reversed(entry.items())}


PRESENTATION: dict[str, tuple[Edit, set[tuple[str, str]]]] = {
    "run_label": (lambda c: c["runs"]["plain"].update(label="Plain cross-entropy"), {("table", DATASET)}),
    "dataset_description": (lambda c: c["datasets"][DATASET].update(description="another text"),
                            {("table", DATASET)}),
    # an evaluate-time setting: metrics are recomputed from the saved predictions
    "open_threshold": (lambda c: c["datasets"][DATASET].update(open_threshold=0.3),
                       {("evaluate", "plain"), ("evaluate", "crt"), ("table", DATASET), ("summary", "")}),
    "runs_list": (lambda c: c["datasets"][DATASET]["runs"].append("extra"),
                  {("train", "extra"), ("evaluate", "extra"), ("table", DATASET),
                   ("summary", "")}),
    "figure_setting": (lambda c: c["tsne"].update(perplexity=4), {("tsne", "plain")}),
    "figure_runs": (lambda c: c["tsne"]["runs"].append("crt"), {("tsne", "crt")}),
    "key_order": (lambda c: reorder_keys(c["runs"]), set()),
}


@pytest.mark.parametrize("name", list(PRESENTATION))
def test_presentation_edit_plans_no_heavy_job(finished: Path, name: str) -> None:
    edit, expected = PRESENTATION[name]
    jobs = planned(finished, edited(edit), name)
    assert not {(rule, run) for rule, run in jobs if rule in HEAVY and run != "extra"}, jobs
    assert jobs == expected


def test_training_parameter_reruns_its_run_and_children_only(finished: Path) -> None:
    jobs = planned(finished, edited(lambda c: c["runs"]["plain"]["params"].update(lr=0.05)), "lr")
    runs = {"plain", "crt"}  # crt starts from plain's checkpoint
    expected = {(rule, r) for rule in ("train", "evaluate") for r in runs}
    expected |= {("table", DATASET), ("summary", ""), ("tsne", "plain")}  # plain's features change
    assert jobs == expected


def test_child_parameter_leaves_parent_alone(finished: Path) -> None:
    jobs = planned(finished, edited(lambda c: c["runs"]["crt"]["params"].update(lr=0.01)), "crt_lr")
    assert jobs == {("train", "crt"), ("evaluate", "crt"), ("table", DATASET), ("summary", "")}


def test_curation_edit_recurates(finished: Path) -> None:
    jobs = planned(finished, edited(lambda c: c["datasets"][DATASET]["curation"].update(seed=1)), "curation")
    assert {("curate", DATASET), ("train", "plain"), ("train", "crt")} <= jobs


def test_sigint_to_snakemake_alone_keeps_the_finished_training(tmp_path: Path) -> None:
    """``kill -INT <snakemake>`` while training: no new job starts, the training job finishes and
    is recorded complete, so the rerun trains nothing (Snakemake's own SIGINT handling would
    leave its outputs marked incomplete and retrain from scratch)."""
    cfg = finished_config()
    cfg["runs"]["plain"]["params"].update(epochs=12, batch_size=16)
    path = write_config(cfg, tmp_path / "config.yaml")
    work = tmp_path / "work"
    work.mkdir()
    metrics = f"results/metrics/{DATASET}/plain/seed0.parquet"
    train_dir = work / f"results/train/{DATASET}/plain/seed0"

    def restore_sigint() -> None:  # a child of a background shell starts with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(smk_cmd(work, path, [metrics]), cwd=work, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=restore_sigint)
    try:
        wait_for(lambda: (train_dir / "checkpoint.pt").exists() or proc.poll() is not None, timeout=300,
                 what="the first checkpoint")
        assert job_processes(proc.pid, "train.py"), "the training job ended before the signal"
        proc.send_signal(signal.SIGINT)  # to Snakemake only, not to its job
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out[-3000:]
    assert "Will exit after finishing currently running jobs" in out, out[-3000:]
    assert (train_dir / "model.pt").exists(), out[-3000:]
    assert not (work / metrics).exists(), "no job may start after SIGINT"
    assert planned(work, cfg, "after_sigint", (metrics,)) == {("evaluate", "plain")}
