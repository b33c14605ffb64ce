"""End to end through the real workflow (Snakemake): the mfm part of the suite."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.methods.mfm.method import (
    META,
)

pytestmark = pytest.mark.slow


# --- end to end: tests/configs/smoke_mfm.yaml through the whole DAG --------------------------------
ROOT = Path(__file__).resolve().parents[2]
SMOKE_MFM = ROOT / "tests" / "configs" / "smoke_mfm.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mfm_smoke(tmp_path_factory) -> Path:
    """The workflow on smoke_mfm.yaml (plain, mfm, mfm_phi, mw_net, l2rw, a cross-dataset transfer), once."""
    from smk_runs import smoke_workflow

    return smoke_workflow(tmp_path_factory.mktemp("mfm_smoke"), SMOKE_MFM)


@pytest.mark.slow
def test_smoke_mfm_tables_figures_and_transfer(mfm_smoke):
    import pandas as pd
    import yaml

    cfg = yaml.safe_load(SMOKE_MFM.read_text())
    table = pd.read_csv(mfm_smoke / "results/tables/fmnist_smoke.csv")
    assert len(table) == len(cfg["datasets"]["fmnist_smoke"]["runs"])  # every bilevel run reaches the table
    assert table["Overall"].between(0, 100).all()
    assert len(pd.read_csv(mfm_smoke / "results/tables/fmnist_smoke_b.csv")) == 1
    for fig in ("mfm_gamma_beta_mfm_seed0.png", "mfm_confusion_mfm_seed0.png"):
        assert (mfm_smoke / "results/figures/fmnist_smoke" / fig).read_bytes()[:8] == PNG_MAGIC
    mod = pd.read_parquet(mfm_smoke / "results/figures/fmnist_smoke/mfm_modulation_mfm_seed0.parquet")
    gamma = np.stack(mod["gamma"].to_numpy())
    assert gamma.shape[1] == 128 and np.allclose(gamma.mean(1), 1.0, atol=1e-4)  # C * softmax: mean 1
    # transfer: the target run carries the source's modulator unchanged (frozen during training)
    src = torch.load(mfm_smoke / "results/train/fmnist_smoke/mfm/seed0/model.pt", weights_only=False)["model"]
    dst = torch.load(mfm_smoke / "results/train/fmnist_smoke_b/mfm_transfer/seed0/model.pt", weights_only=False)["model"]
    keys = [k for k in src if k.startswith(META + ".")]
    assert keys and all(torch.equal(src[k], dst[k]) for k in keys)
    assert not torch.equal(src["head.weight"], dst["head.weight"])
