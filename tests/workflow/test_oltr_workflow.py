"""End to end through the real workflow (Snakemake): the oltr part of the suite."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


# --- the smoke workflow end to end -----------------------------------------------------------
SMOKE_OLTR = ROOT / "tests" / "configs" / "smoke_oltr.yaml"
DS = "fmnist_smoke"
TARGETS = (f"results/tables/{DS}.md", f"results/figures/{DS}/oltr_tsne_seed0.png",
           f"results/figures/{DS}/oltr_threshold_sweep.png", "results/figures/oltr/longtailness.png",
           "results/figures/oltr/open_classes.png",
           # the tables the figures are drawn from, beside them
           f"results/figures/{DS}/oltr_threshold_sweep.parquet", "results/figures/oltr/longtailness.parquet",
           "results/figures/oltr/open_classes.parquet")


@pytest.fixture(scope="module")
def oltr_smoke(tmp_path_factory) -> Path:
    return smoke_workflow(tmp_path_factory.mktemp("oltr_smoke"), SMOKE_OLTR, TARGETS)


@pytest.mark.slow
def test_smoke_oltr_outputs_and_figures(oltr_smoke):
    for t in TARGETS:
        assert (oltr_smoke / t).stat().st_size > 0, t
    for run in ("oltr", "oltr_reach"):
        pred = pd.read_parquet(oltr_smoke / f"results/predictions/{DS}/{run}/seed0.parquet")
        assert set(pred["split"]) == {"val", "test", "open"}
        assert ((pred["confidence"] > 0) & (pred["confidence"] <= 1)).all()
    table = (oltr_smoke / f"results/tables/{DS}.md").read_text()
    assert "| oltr " in table and "| oltr_reach " in table
    sweep = pd.read_parquet(oltr_smoke / f"results/figures/{DS}/oltr_threshold_sweep.parquet")
    assert set(sweep["run"]) == {"plain", "oltr_reach", "oltr"} and len(sweep) == 3 * 5
    ckpt = torch.load(oltr_smoke / f"results/train/{DS}/oltr/seed0/model.pt", weights_only=False)
    assert ckpt["method"] == "oltr" and "meta.centroids" in ckpt["model"]
