"""benchmarks/stability.py through the real workflow on the smoke dataset: it reports a run whose
loss goes non-finite as diverged and exits 1, and the most fragile default recipes (the loss that
diverged and the bilevel method that ended as a constant predictor on a variant curation, before
the recipes were made robust) train on the dataset and its variant with no divergence or collapse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smk_runs import ROOT, SMOKE

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "benchmarks" / "stability.py"


def run_stability(tmp_path: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, str(SCRIPT), "--configfile", str(conf), "--workdir", str(tmp_path / "w"),
                           *args], capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def row(out: str, dataset: str, run: str) -> tuple[int, int]:
    """(diverged, collapsed) counts of one printed row."""
    m = re.search(rf"^{re.escape(dataset)}\s+{re.escape(run)}\s+(\d+)\s+(\d+)\s", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def smoke(runs: dict) -> dict:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["runs"] = runs
    cfg["tsne"] = {"runs": []}
    return cfg


def test_a_diverging_run_is_reported_and_fails_the_benchmark(tmp_path: Path) -> None:
    cfg = smoke({"plain": {"method": "plain", "params": {"epochs": 2, "batch_size": 64}},
                 "boom": {"method": "plain", "params": {"epochs": 2, "batch_size": 64, "lr": 1.0e6}}})
    proc = run_stability(tmp_path, cfg, "--seeds", "0")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr[-2000:]
    for ds in ("fmnist_smoke", "fmnist_smoke_variant"):
        assert row(out, ds, "plain") == (0, 0)
        diverged, collapsed = row(out, ds, "boom")
        assert diverged + collapsed >= 1, out
    assert re.search(r"total: 4 trained runs, [12] diverged", out) or "collapsed (target 0)" in out


def test_the_fragile_default_recipes_train_on_both_curations(tmp_path: Path) -> None:
    default = yaml.safe_load((ROOT / "config.yaml").read_text())["runs"]
    runs = {}
    for name in ("balanced_softmax", "mfm"):
        spec = dict(default[name])
        spec["params"] = {**spec["params"], "epochs": 4}  # the default recipe, fewer epochs
        runs[name] = spec
    cfg = smoke(runs)
    cfg["datasets"]["fmnist_smoke"]["curation"].update(meta_per_class=5, meta_mode="development")
    proc = run_stability(tmp_path, cfg, "--seeds", "0", "1", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    for ds in ("fmnist_smoke", "fmnist_smoke_variant"):
        for name in runs:
            assert row(proc.stdout, ds, name) == (0, 0), proc.stdout


def test_divergence_reads_only_epochs_that_trained():
    """A NaN loss with a finite lr diverged; the training-free row (NaN loss, NaN lr) and a sweep
    history without loss or lr (tau_norm's) did not."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pandas as pd
    from stability import diverged

    assert diverged(pd.DataFrame({"epoch": [1, 2], "loss": [0.5, float("nan")], "lr": [0.1, 0.1]}))
    assert not diverged(pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4], "lr": [0.1, 0.1]}))
    assert not diverged(pd.DataFrame({"epoch": [0], "loss": [float("nan")], "lr": [float("nan")]}))
    assert not diverged(pd.DataFrame({"tau": [0.0, 0.5], "val_acc": [0.7, 0.72], "selected": [False, True]}))
