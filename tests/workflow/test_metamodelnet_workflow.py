"""End to end through the real workflow (Snakemake): the metamodelnet part of the suite."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from longtail.methods.metamodelnet import metanet as M
from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow


# --- end to end: tests/configs/smoke_mmn.yaml through the real workflow --------------------------
ROOT = Path(__file__).resolve().parents[2]
SMOKE_MMN = ROOT / "tests" / "configs" / "smoke_mmn.yaml"
DS = "fmnist_smoke"
RUNS = ("plain", "metamodelnet", "metamodelnet_fix_split", "model_regression", "mmn_classifier_alone")


@pytest.fixture(scope="module")
def mmn_smoke(tmp_path_factory) -> Path:
    return smoke_workflow(tmp_path_factory.mktemp("mmn_smoke"), SMOKE_MMN)


def test_smoke_mmn_table_and_figures(mmn_smoke):
    table = (mmn_smoke / f"results/tables/{DS}.md").read_text()
    for run in RUNS:
        metrics = pd.read_parquet(mmn_smoke / f"results/metrics/{DS}/{run}/seed0.parquet")
        top1 = metrics.query("split == 'test' and setting == 'closed' and group == 'overall' and metric == 'top1'")
        assert 0.0 <= float(top1["value"].iloc[0]) <= 1.0
    assert "MetaModelNet" in table or "metamodelnet" in table
    for name in ("mmn_dynamics_metamodelnet_seed0.png", "mmn_gain_seed0.png"):
        png = mmn_smoke / f"results/figures/{DS}/{name}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the head keeps theta* for classes above the tail threshold: their rows equal the refit models
    ckpt = torch.load(mmn_smoke / f"results/train/{DS}/metamodelnet/seed0/model.pt", weights_only=False)
    st = ckpt["model"]
    w, b = M.fold_standardisation(st["head.theta_star"], st["head.mean"], st["head.scale"])
    head_rows = st["head.counts"] > 2 ** ckpt["config"]["num_blocks"]
    assert torch.allclose(st["head.weight"][head_rows], w[head_rows], atol=1e-5)
    assert ckpt["config"]["backbone"] == "lenet"
    # the classifier alone: every row is theta*, and it has no Fig. 4 (no meta-network)
    alone = torch.load(mmn_smoke / f"results/train/{DS}/mmn_classifier_alone/seed0/model.pt", weights_only=False)
    st = alone["model"]
    w, _ = M.fold_standardisation(st["head.theta_star"], st["head.mean"], st["head.scale"])
    assert torch.allclose(st["head.weight"], w, atol=1e-6)
    assert not (mmn_smoke / f"results/figures/{DS}/mmn_dynamics_mmn_classifier_alone_seed0.png").exists()
