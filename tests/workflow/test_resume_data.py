"""Resume never mixes data, through the real workflow: a training job killed after an epoch's
checkpoint, then a curation change (``curation.seed``) and a rerun, starts afresh on the new
split and ends exactly as a clean run on it. The source is an image folder (streamed files), whose
class counts and normalisation do not move with the seed: only the samples' own fingerprint can
tell the two splits apart."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from generated_data import write_image_folder
from smk_runs import kill_training_after_first_checkpoint, run_smk, write_config

pytestmark = pytest.mark.slow

DATASET, RUN, EPOCHS = "folder_lt", "plain", 8
TRAIN_DIR = f"results/train/{DATASET}/{RUN}/seed0"
TRAIN_LOG = f"results/logs/train/{DATASET}/{RUN}/seed0.log"
PREDICTIONS = f"results/predictions/{DATASET}/{RUN}/seed0.parquet"


def config(root: Path, curation_seed: int) -> dict:
    return {
        "seeds": [0], "device": "cpu", "open_threshold": 0.5,
        "datasets": {DATASET: {
            "source": {"name": "image_folder", "root": str(root), "image_size": 28},
            "curation": {"profile": "exponential", "n_max": 24, "imbalance_factor": 4, "val_per_class": 2,
                         "open_classes": ["class4"], "seed": curation_seed},
        }},
        "runs": {RUN: {"method": "plain", "params": {"backbone": "lenet", "epochs": EPOCHS, "batch_size": 8}}},
        "tsne": {"runs": []},
    }


def train_rows(work: Path) -> pd.DataFrame:
    samples = pd.read_parquet(work / f"results/data/{DATASET}/samples.parquet")
    return samples.loc[samples["split"] == "train", ["sample_id", "label"]].reset_index(drop=True)


def test_curation_change_after_a_kill_starts_training_afresh(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "folder", classes=5, train=30, test=4)
    cfg0 = write_config(config(tmp_path / "folder", 0), tmp_path / "seed0.yaml")
    cfg1 = write_config(config(tmp_path / "folder", 1), tmp_path / "seed1.yaml")
    work = tmp_path / "work"
    work.mkdir()
    returncode, out = kill_training_after_first_checkpoint(work, cfg0, PREDICTIONS, TRAIN_DIR)
    ckpt = work / TRAIN_DIR / "checkpoint.pt"
    assert returncode != 0, out[-3000:]
    assert ckpt.exists() and not (work / TRAIN_DIR / "model.pt").exists()
    before = train_rows(work)

    rerun = run_smk(work, cfg1, [PREDICTIONS])  # the same run on another curation
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    after = train_rows(work)
    assert len(after) == len(before) and not after.equals(before), "the seed must change the training split"
    log = (work / TRAIN_LOG).read_text()
    assert re.search(r"ignoring \S+checkpoint\.pt: it was written for another", log), log[-2000:]
    assert "resuming" not in log
    trained = [int(e) for e in re.findall(r"^epoch (\d+): loss", log, flags=re.MULTILINE)]
    assert trained == list(range(1, EPOCHS + 1)), "every epoch is trained on the new split"
    history = pd.read_parquet(work / TRAIN_DIR / "history.parquet")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))

    clean = run_smk(tmp_path / "clean", cfg1, [PREDICTIONS])
    assert clean.returncode == 0, clean.stdout[-4000:]
    clean_history = pd.read_parquet(tmp_path / "clean" / TRAIN_DIR / "history.parquet")
    pd.testing.assert_series_equal(history["loss"], clean_history["loss"], check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(work / PREDICTIONS),
                                  pd.read_parquet(tmp_path / "clean" / PREDICTIONS), check_exact=True)
