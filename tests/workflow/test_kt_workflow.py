"""End to end through the real workflow (Snakemake): the kt part of the suite."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow


# --- end to end: tests/configs/smoke_kt.yaml through the real workflow ---------------------------
ROOT = Path(__file__).resolve().parents[2]
SMOKE_KT = ROOT / "tests" / "configs" / "smoke_kt.yaml"
DS = "fmnist_smoke"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kt_smoke(tmp_path_factory) -> Path:
    """The workflow on smoke_kt.yaml (a cosine backbone, a few-shot-excluded one, KT runs), once."""
    return smoke_workflow(tmp_path_factory.mktemp("kt_smoke"), SMOKE_KT)


@pytest.mark.slow  # ~20 Snakemake jobs: over a minute even on an idle 2-core machine
def test_smoke_kt_outputs_and_figures(kt_smoke):
    import yaml

    runs = yaml.safe_load(SMOKE_KT.read_text())["runs"]
    table = pd.read_csv(kt_smoke / f"results/tables/{DS}.csv")
    assert len(table) == len(runs)  # every KT run reaches the table
    for kind in ("embedding", "attention"):
        png = kt_smoke / f"results/figures/{DS}/kt_{kind}_kt_wh_seed0.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
    parent = torch.load(kt_smoke / f"results/train/{DS}/kt_backbone/seed0/model.pt", weights_only=False)
    ens = torch.load(kt_smoke / f"results/train/{DS}/kt_ensemble/seed0/model.pt", weights_only=False)
    assert ens["epoch"] == 0 and ens["optimizer"] is None  # training-free
    for key, v in parent["model"].items():
        if key.startswith("backbone."):
            assert torch.equal(ens["model"][key], v), key
    assert ens["model"]["head.scale"].item() == pytest.approx(parent["model"]["head.scale"].item())
    assert ens["model"]["head.weight"].shape[0] == 3  # w_h(0), w_h(20), w_h(100)
    # the masked backbone never predicts the few-shot classes; KT adds them back by prototypes
    preds = pd.read_parquet(kt_smoke / f"results/predictions/{DS}/kt_backbone_nofew/seed0.parquet")
    few = [5, 6, 7]  # 17, 11, 7 training images (< shots.few = 20)
    assert not preds["pred"].isin(few).any()
    cont = pd.read_parquet(kt_smoke / f"results/predictions/{DS}/kt_continual_nofew/seed0.parquet")
    assert cont["pred"].isin(few).any()
    head = torch.load(kt_smoke / f"results/train/{DS}/kt_continual_nofew/seed0/model.pt",
                      weights_only=False)["model"]
    assert head["head.counts"][few].tolist() == [0, 0, 0]
