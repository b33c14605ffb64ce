"""End to end through the real workflow (Snakemake): a glyph dataset with a far open set of
Fashion-MNIST images (tests/configs/smoke_glyphs_far.yaml) is curated into the open_far split,
predicted by the train job, evaluated apart from the near open set with the val_tpr threshold,
and reaches the table's detection section as its own (far) columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "configs" / "smoke_glyphs_far.yaml"
DS = "glyphs_far"


@pytest.fixture(scope="module")
def far_smoke(tmp_path_factory) -> Path:
    return smoke_workflow(tmp_path_factory.mktemp("far_smoke"), CONFIG, [f"results/tables/{DS}.csv"])


def test_far_open_set_is_curated_predicted_and_tabled(far_smoke):
    samples = pd.read_parquet(far_smoke / f"results/data/{DS}/samples.parquet")
    far = samples[samples["split"] == "open_far"]
    # 10 per class of Trouser and Bag from Fashion-MNIST's test split, label -1
    assert far.groupby("class_name").size().to_dict() == {"fashion_mnist:Bag": 10, "fashion_mnist:Trouser": 10}
    assert (far["label"] == -1).all() and set(far["source"]) == {"far0-test"}
    preds = pd.read_parquet(far_smoke / f"results/predictions/{DS}/plain/seed0.parquet")
    assert (preds["split"] == "open_far").sum() == 20 and (preds["split"] == "open").sum() == 40
    metrics = pd.read_parquet(far_smoke / f"results/metrics/{DS}/plain/seed0.parquet")
    rows = metrics.set_index(["setting", "group", "metric"])["value"]
    # the val_tpr threshold (schema default): the 29th largest of the 30 known val confidences
    val = np.sort(preds.loc[preds["split"] == "val", "confidence"].to_numpy())[::-1]
    assert rows[("open", "overall", "threshold")] == pytest.approx(val[28])
    assert rows[("open_far", "overall", "threshold")] == rows[("open", "overall", "threshold")]
    for setting in ("open", "open_far"):
        for metric in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "f_measure", "f_measure_oltr2019"):
            assert 0.0 <= rows[(setting, "overall", metric)] <= 1.0, (setting, metric)
    assert 0.0 <= rows[("closed", "overall", "ece")] <= 1.0
    table = pd.read_csv(far_smoke / f"results/tables/{DS}.csv")
    assert table["Run"].tolist() == ["plain"]
    far_cols = [c for c in table.columns if c.startswith("Far ") and not c.endswith(" std")]
    assert far_cols == ["Far AUROC", "Far AUPR-in", "Far AUPR-out", "Far FPR@95TPR", "Far F-measure",
                        "Far F-measure (OLTR 2019)", "Far Threshold"]
    md = (far_smoke / f"results/tables/{DS}.md").read_text()
    assert "## Open-set detection and calibration" in md and "| Far AUROC" in md
    # 20 epochs leave chance (val accuracy 0.63 here), so the far numbers are in the table, in percent
    assert table["Collapsed"].iloc[0] == 0 and rows[("closed", "overall", "collapsed")] == 0.0
    for col, metric in (("Far AUROC", "auroc"), ("Far FPR@95TPR", "fpr_at_95_tpr"), ("Far Threshold", "threshold")):
        assert table[col].iloc[0] == pytest.approx(100 * rows[("open_far", "overall", metric)])
    assert f"{100 * rows[('open_far', 'overall', 'auroc')]:.2f}" in md
