"""Faults on a workstation, through the real workflow: a training job killed with SIGKILL resumes
from its checkpoint and ends bit-identical to an uninterrupted run (CPU); the same seed gives the
same predictions; corrupt data and a diverging run fail with a clear message and no partial outputs.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from smk_runs import (DATASET, EPOCHS, PREDICTIONS, TRAIN_DIR, TRAIN_LOG, fault_config,
                      kill_training_after_first_checkpoint, read_history, read_predictions, reference_run, run_smk,
                      smoke_config, write_config)

pytestmark = pytest.mark.slow
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "smk_shared"
    root.mkdir(exist_ok=True)
    return root


def leftovers(results: Path) -> list[str]:
    """Temporary files of atomic writers left behind."""
    return [str(p) for p in results.rglob("*.tmp")] if results.exists() else []


def test_kill9_mid_epoch_resumes_and_matches_uninterrupted_run(shared: Path, tmp_path: Path) -> None:
    ref = reference_run(shared)
    cfg = write_config(fault_config(), tmp_path / "fault.yaml")
    work = tmp_path / "work"
    work.mkdir()
    returncode, out = kill_training_after_first_checkpoint(work, cfg)
    ckpt = work / TRAIN_DIR / "checkpoint.pt"
    assert returncode != 0, out[-3000:]
    assert not (work / TRAIN_DIR / "model.pt").exists(), "a killed job must not leave a model.pt"
    assert ckpt.exists(), "the checkpoint must survive the kill"

    rerun = run_smk(work, cfg, [PREDICTIONS])
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    log = (work / TRAIN_LOG).read_text()
    m = re.search(r"resuming from \S+checkpoint\.pt after epoch (\d+)", log)
    assert m, f"the rerun did not resume:\n{log[-2000:]}"
    resumed_after = int(m.group(1))  # 0-based index of the last finished epoch
    assert 0 <= resumed_after < EPOCHS - 1, "the kill must have happened before the last epoch"
    # Only the epochs after the checkpoint were trained again ...
    trained = [int(e) for e in re.findall(r"^epoch (\d+): loss", log, flags=re.M)]
    assert trained == list(range(resumed_after + 2, EPOCHS + 1))
    # ... and the history still has every epoch once.
    hist = read_history(work)
    assert hist["epoch"].tolist() == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(read_predictions(work), read_predictions(ref), check_exact=True)
    ref_hist = read_history(ref)
    pd.testing.assert_series_equal(hist["loss"], ref_hist["loss"], check_exact=True)
    assert not (work / TRAIN_DIR / "checkpoint.pt").exists(), "the checkpoint is removed once model.pt exists"


def test_same_seed_twice_gives_identical_predictions(shared: Path, tmp_path: Path) -> None:
    ref = reference_run(shared)
    cfg = write_config(fault_config(), tmp_path / "fault.yaml")
    proc = run_smk(tmp_path / "again", cfg, [PREDICTIONS])
    assert proc.returncode == 0, proc.stdout[-4000:]
    a, b = read_predictions(tmp_path / "again"), read_predictions(ref)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_truncated_idx_file_fails_clearly_without_partial_outputs(tmp_path: Path) -> None:
    if not FMNIST.is_dir():
        pytest.skip(f"{FMNIST} not installed (apt-get install dataset-fashion-mnist)")
    data = tmp_path / "fmnist"
    data.mkdir()
    for f in FMNIST.glob("*-ubyte.gz"):
        shutil.copy(f, data / f.name)
    bad = data / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) - 1000]))  # a download cut short
    cfg = smoke_config()
    cfg["datasets"][DATASET]["source"] = {"name": "fashion_mnist", "root": str(data)}
    work = tmp_path / "work"
    proc = run_smk(work, write_config(cfg, tmp_path / "bad.yaml"), [f"results/data/{DATASET}/samples.parquet"])
    assert proc.returncode != 0
    assert str(bad) in proc.stdout and "truncated" in proc.stdout, proc.stdout[-3000:]
    assert "re-download" in proc.stdout  # says how to fix it
    data_dir = work / "results" / "data" / DATASET
    assert not (data_dir / "samples.parquet").exists()
    assert not (data_dir / "class_counts.parquet").exists()
    assert leftovers(work / "results") == []


def test_diverging_run_fails_clearly_and_leaves_no_model(tmp_path: Path) -> None:
    cfg = smoke_config(lr=1.0e6, epochs=3, schedule="constant")
    work = tmp_path / "work"
    proc = run_smk(work, write_config(cfg, tmp_path / "diverge.yaml"), [f"{TRAIN_DIR}/model.pt"])
    assert proc.returncode != 0
    assert "DivergenceError" in proc.stdout and "lower lr" in proc.stdout, proc.stdout[-3000:]
    for name in ("model.pt", "history.parquet", "config.yaml", "checkpoint.pt"):
        assert not (work / TRAIN_DIR / name).exists(), f"{name} left behind by a diverged run"
    assert leftovers(work / "results") == []
