"""The resume fingerprint: a checkpoint is continued only by a run on exactly the same training
samples (ids, splits, labels, order) from the same source files; anything else starts fresh."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from longtail import trainer
from longtail.curation import CurationConfig, curate
from longtail.device import select_device
from longtail.pipeline import samples_fingerprint, source_fingerprint, train
from longtail.sources import SourceData

PARAMS = {"backbone": "lenet", "epochs": 3, "batch_size": 16, "lr": 0.05}
CURATION = CurationConfig(n_max=16, imbalance_factor=4, val_per_class=3)


def tiny_source(provenance: dict | None = None) -> SourceData:
    """4 classes of 28x28 grey images whose brightness depends on the class."""
    rng = np.random.default_rng(0)
    labels = {"train": np.repeat(np.arange(4), 24), "test": np.repeat(np.arange(4), 5)}
    images = {s: np.clip(40 + 50 * y[:, None, None] + rng.normal(0, 30, (len(y), 28, 28)), 0, 255).astype(np.uint8)
              for s, y in labels.items()}
    return SourceData("tiny", ("a", "b", "c", "d"), labels, images=images,
                      provenance=provenance or {"source_files": '[["/data/x", "abc"]]'})


@pytest.fixture(scope="module")
def samples() -> pd.DataFrame:
    return curate(tiny_source(), CURATION, seed=0)[0]


def first_row(samples: pd.DataFrame, split: str) -> int:
    return int(np.flatnonzero(samples["split"] == split)[0])


# ------------------------------------------------------------------------------ samples table


def test_identical_table_same_fingerprint(samples):
    fp = samples_fingerprint(samples)
    assert len(fp) == 64
    assert samples_fingerprint(samples.copy()) == fp
    assert samples_fingerprint(curate(tiny_source(), CURATION, seed=0)[0]) == fp  # curated again


@pytest.mark.parametrize("change", ["label", "split", "sample", "order", "curation_seed"])
def test_one_changed_training_sample_changes_it(samples, change):
    other = samples.copy()
    i = first_row(samples, "train")
    if change == "label":
        other.loc[i, "label"] = (other.loc[i, "label"] + 1) % 4
    elif change == "split":
        other.loc[i, "split"] = "val"
    elif change == "sample":  # another image of the source in the same place
        other.loc[i, ["sample_id", "source_index"]] = ["train-999", 999]
    elif change == "order":
        j = first_row(samples, "val")
        other.iloc[[j, j + 1]] = other.iloc[[j + 1, j]].to_numpy()
    else:
        other = curate(tiny_source(), CURATION, seed=1)[0]
    assert samples_fingerprint(other) != samples_fingerprint(samples)


def test_rows_training_never_reads_do_not_count(samples):
    other = samples.copy()
    i = first_row(samples, "test")
    other.loc[i, "label"] = (other.loc[i, "label"] + 1) % 4
    other.loc[i, "class_name"] = "renamed"
    assert samples_fingerprint(other) == samples_fingerprint(samples)


def test_source_identity():
    a = source_fingerprint(tiny_source())
    assert source_fingerprint(tiny_source()) == a
    assert source_fingerprint(tiny_source({"source_files": '[["/data/x", "abd"]]'})) != a  # a file changed


# ------------------------------------------------------------------------------ resume decision


class Killed(RuntimeError):
    """Stands in for the job being killed."""


def run(samples: pd.DataFrame, ckpt, source: SourceData | None = None) -> tuple[dict, pd.DataFrame]:
    return train("plain", PARAMS, samples, source or tiny_source(), seed=0, device=select_device("cpu", 1),
                 checkpoint=ckpt, progress=False)


def kill_in_epoch(monkeypatch, epoch: int) -> None:
    step = trainer.train_step

    def dying(method, model, batch, *args):
        if batch.epoch == epoch:
            raise Killed
        return step(method, model, batch, *args)
    monkeypatch.setattr(trainer, "train_step", dying)


def swap_two_labels(samples: pd.DataFrame) -> pd.DataFrame:
    """Two training images of different classes swap labels: the same images, class counts and
    pixel statistics, so only the samples' fingerprint tells the tables apart."""
    out = samples.copy()
    train = out.index[out["split"] == "train"]
    i = train[0]
    j = next(k for k in train if out.loc[k, "label"] != out.loc[i, "label"])
    out.loc[[i, j], "label"] = out.loc[[j, i], "label"].to_numpy()
    return out


@pytest.mark.parametrize("what", ["curation", "relabelled", "source"])
def test_checkpoint_of_other_data_is_not_resumed(samples, tmp_path, monkeypatch, capsys, what):
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:
        kill_in_epoch(m, 2)
        with pytest.raises(Killed):
            run(samples, ckpt)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # two epochs were checkpointed
    if what == "curation":
        new, source = curate(tiny_source(), CURATION, seed=1)[0], None
    elif what == "relabelled":
        new, source = swap_two_labels(samples), None
    else:
        new, source = samples, tiny_source({"source_files": '[["/data/x", "changed"]]'})
    clean, clean_history = run(new, tmp_path / "clean" / "checkpoint.pt", source)
    capsys.readouterr()
    got, history = run(new, ckpt, source)
    err = capsys.readouterr().err
    assert f"ignoring {ckpt}" in err and "resuming" not in err
    assert history["epoch"].tolist() == [1, 2, 3]
    assert [f"epoch {e}: loss" in err for e in (1, 2, 3)] == [True] * 3  # all trained in this job
    assert got["fingerprint"] == clean["fingerprint"]
    for k, v in clean["model"].items():
        assert torch.equal(got["model"][k], v), k
    assert history["loss"].tolist() == clean_history["loss"].tolist()


def test_checkpoint_of_the_same_data_is_resumed(samples, tmp_path, monkeypatch, capsys):
    """Control: on the same samples and source the killed run IS continued."""
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:
        kill_in_epoch(m, 2)
        with pytest.raises(Killed):
            run(samples, ckpt)
    capsys.readouterr()
    run(samples.copy(), ckpt)
    assert f"resuming from {ckpt} after epoch 1" in capsys.readouterr().err
