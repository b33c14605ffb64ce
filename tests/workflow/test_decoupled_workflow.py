"""End to end through the real workflow (Snakemake): the decoupled part of the suite."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


# --- end to end: tests/configs/smoke_decoupled.yaml through the real workflow --------------------
SMOKE_RUNS = ("crt", "lws", "tau_norm", "ncm", "openmax")


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """The workflow on smoke_decoupled.yaml up to the classifier-stage runs' metrics, once."""
    work = smoke_workflow(tmp_path_factory.mktemp("smoke_decoupled"), ROOT / "tests/configs/smoke_decoupled.yaml",
                          [f"results/metrics/fmnist_smoke/{r}/seed0.parquet" for r in SMOKE_RUNS])
    return work / "results"


@pytest.mark.slow
def test_smoke_backbones_equal_plain_and_metrics_exist(smoke_dir):
    plain = torch.load(smoke_dir / "train/fmnist_smoke/plain/seed0/model.pt", map_location="cpu", weights_only=False)
    for run in SMOKE_RUNS:
        ckpt = torch.load(smoke_dir / f"train/fmnist_smoke/{run}/seed0/model.pt", map_location="cpu",
                          weights_only=False)
        backbone = {k: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
        assert backbone.keys() == {k for k in plain["model"] if k.startswith("backbone.")}, run
        assert all(torch.equal(v, plain["model"][k]) for k, v in backbone.items()), run
        metrics = pd.read_parquet(smoke_dir / f"metrics/fmnist_smoke/{run}/seed0.parquet")
        top1 = metrics.query("split == 'test' and setting == 'closed' and group == 'overall' and metric == 'top1'")
        assert len(top1) == 1 and 0.0 <= float(top1["value"].iloc[0]) <= 1.0, run
    tau = torch.load(smoke_dir / "train/fmnist_smoke/tau_norm/seed0/model.pt", map_location="cpu",
                     weights_only=False)["model"]["head.tau"]
    history = pd.read_parquet(smoke_dir / "train/fmnist_smoke/tau_norm/seed0/history.parquet")
    assert float(tau) == history.loc[history["selected"], "tau"].item()
