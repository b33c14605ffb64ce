"""The paper presets (config/presets/*.yaml): each is a complete config that Snakemake accepts and
plans, and the Fashion-MNIST one (the only preset whose data ships with Debian) runs end to end
when shrunk in size only: fewer images and one epoch, every method, layer and edge kept as is."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from smk_runs import ROOT, smoke_workflow

PRESETS = sorted((ROOT / "config" / "presets").glob("*.yaml"))


def test_there_are_presets():
    assert len(PRESETS) >= 9, PRESETS


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_plans(preset: Path, tmp_path: Path):
    """A dry run validates the preset against the schema and the method configs and builds the DAG."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                           "--configfile", str(preset), "-n", "--cores", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "total" in proc.stdout  # the job stats table: the DAG has jobs


def shrunk_mfm_fmnist() -> dict:
    """mfm_fmnist.yaml at toy size: IF 200 (Table 3: plain, MFM, the frozen-modulator transfer) and
    IF 1000 (Table 6: plain LeNet and MFM on fc), 1 epoch, 1 image in the smallest class."""
    cfg = yaml.safe_load((ROOT / "config" / "presets" / "mfm_fmnist.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    keep = {"fmnist_lt_if200": ["plain_r32", "mfm_r32", "mfm_transfer"],
            "fmnist_lt_if1000": ["plain_lenet", "mfm_lenet_fc"]}
    cfg["datasets"] = {name: cfg["datasets"][name] for name in keep}
    for name, runs in keep.items():
        ds = cfg["datasets"][name]
        ds["runs"] = runs
        imbalance = ds["curation"].get("imbalance_factor", 200)
        ds["curation"].update(n_max=imbalance, val_per_class=2, test_per_class=20, meta_per_class=1)
    for run in cfg["runs"].values():
        run["params"].update(epochs=1, schedule="constant", batch_size=64)
        run["params"].pop("milestones", None)
    cfg["paper_results"] = {k: v for k, v in cfg.get("paper_results", {}).items() if k in keep}
    cfg["tsne"] = {"runs": []}
    for key in ("mfm_figures", "oltr_figures", "kt_figures", "mmn_figures"):
        cfg.pop(key, None)
    return cfg


@pytest.mark.slow
def test_mfm_fmnist_preset_runs_end_to_end(tmp_path: Path):
    cfg_path = tmp_path / "preset.yaml"
    cfg_path.write_text(yaml.safe_dump(shrunk_mfm_fmnist(), sort_keys=False))
    work = smoke_workflow(tmp_path / "work", cfg_path,
                          targets=["results/tables/fmnist_lt_if200.csv", "results/tables/fmnist_lt_if1000.csv"])
    t200 = pd.read_csv(work / "results" / "tables" / "fmnist_lt_if200.csv")
    t1000 = pd.read_csv(work / "results" / "tables" / "fmnist_lt_if1000.csv")
    assert len(t200) == 3 and len(t1000) == 2
    # the paper's Table 3 figure stands beside ours, and Test-1 / Test-2 (appendix C.1) are evaluated
    text = (work / "results" / "tables" / "fmnist_lt_if200.md").read_text()
    assert "83.88" in text, text
    assert any("Test-1" in c for c in t200.columns) and any("Test-2" in c for c in t200.columns), t200.columns
    # the transfer run trained with the modulator mfm_r32 learned on IF 200 (the cross-dataset edge)
    assert (work / "results" / "train" / "fmnist_lt_if200" / "mfm_transfer" / "seed0" / "model.pt").is_file()
    assert (work / "results" / "train" / "fmnist_lt_if1000" / "mfm_lenet_fc" / "seed0" / "model.pt").is_file()
