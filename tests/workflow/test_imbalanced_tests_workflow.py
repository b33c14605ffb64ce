"""End to end through the real workflow (Snakemake): the imbalanced_tests part of the suite."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SMOKE_IMB = ROOT / "tests" / "configs" / "smoke_imbalanced.yaml"


def counts_of(samples: pd.DataFrame, split: str) -> list[int]:
    return samples[samples["split"] == split].groupby("label").size().reindex(range(5), fill_value=0).tolist()


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def imb_smoke(tmp_path_factory) -> Path:
    """The workflow on smoke_imbalanced.yaml (plain, 1 epoch), once."""
    from smk_runs import smoke_workflow

    return smoke_workflow(tmp_path_factory.mktemp("imb_smoke"), SMOKE_IMB,
                          targets=["results/tables/fmnist_smoke.md"])  # no figures: not what this is about


@pytest.mark.slow
def test_smoke_imbalanced_tests_reach_the_table(imb_smoke):
    ds = "fmnist_smoke"
    samples = pd.read_parquet(imb_smoke / f"results/data/{ds}/samples.parquet")
    assert samples.groupby("split").size()[["test_reversed", "test_permuted"]].tolist() == [118, 128]  # 4*4+14+20+28+40; 40+...+4
    assert counts_of(samples, "test_reversed")[:5] == [4, 4, 4, 4, 14]
    preds = pd.read_parquet(imb_smoke / f"results/predictions/{ds}/plain/seed0.parquet")
    assert set(preds["split"]) == {"val", "test", "open", "test_reversed", "test_permuted"}
    test = preds[preds["split"] == "test"].set_index("sample_id")
    rev = preds[preds["split"] == "test_reversed"]
    assert (test.loc[rev["sample_id"].str.removeprefix("rev-"), "pred"].to_numpy() == rev["pred"].to_numpy()).all()
    m = pd.read_parquet(imb_smoke / f"results/metrics/{ds}/plain/seed0.parquet")
    err = m[(m["split"] == "test_reversed") & (m["group"] == "overall") & (m["metric"] == "error")]["value"]
    assert err.tolist() == [pytest.approx((rev["pred"] != rev["label"]).mean())]
    table = pd.read_csv(imb_smoke / f"results/tables/{ds}.csv")
    assert table["Test-1 error"].iloc[0] == pytest.approx(100 * err.iloc[0])
    assert table["Test-2 error"].between(0, 100).all() and table["Test-1 error (paper)"].tolist() == [42.13]
    md = (imb_smoke / f"results/tables/{ds}.md").read_text()
    assert "Test-1 error" in md and "Test-2 error" in md and "appendix C.1" in md
