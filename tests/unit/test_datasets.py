"""Real loading code for the large benchmarks, on tiny datasets generated here in their real
layouts: CIFAR python pickles, an ImageFolder tree of PNGs, published split lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from longtail.curation import CurationConfig, curate
from longtail.data import dataset_info, load_split
from longtail.sources import DataError, load_source

from generated_data import write_cifar10, write_cifar100, write_image_folder, write_lists

ROOT = Path(__file__).resolve().parents[2]


def test_cifar10_pickles_load_and_curate(tmp_path):
    write_cifar10(tmp_path)
    src = load_source("cifar10", {"root": str(tmp_path)})
    assert src.images["train"].shape == (120, 32, 32, 3) and src.images["test"].shape == (40, 32, 32, 3)
    assert src.class_names[3] == "c3"
    samples, counts = curate(src, CurationConfig(n_max=10, imbalance_factor=10, val_per_class=1), seed=0)
    # floor(10 * 10^(-i/9)) for i = 0..9
    assert counts["n_train"].tolist() == [10, 7, 5, 4, 3, 2, 2, 1, 1, 1]
    x = load_split(src, samples, "train")
    assert tuple(x.images.shape[1:]) == (3, 32, 32)
    info = dataset_info(samples, src)
    assert info.in_channels == 3
    assert info.image_size == 32  # in-memory images record their side (OLTR's positional attention reads it)


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    src = load_source("cifar100", {"root": str(tmp_path)})
    assert src.images["train"].shape == (300, 32, 32, 3) and src.class_names[42] == "f42"
    assert np.bincount(src.labels["test"]).tolist() == [1] * 100


def test_cifar_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python"):
        load_source("cifar100", {"root": str(tmp_path)})


def test_image_list_checksums_and_missing_image(tmp_path):
    lists = write_lists(tmp_path)
    src = load_source("image_list", {"root": str(tmp_path), "lists": lists})
    samples, counts = curate(src, CurationConfig(profile="lists"))
    assert counts["n_train"].tolist() == [10, 5, 2]
    assert (samples.loc[samples["split"] == "open", "label"] == -1).all()
    assert set(samples["split"]) == {"train", "val", "test", "open"}
    assert len(samples.attrs["train_list_sha256"]) == 64
    (tmp_path / "images/test/n001_0.png").unlink()
    with pytest.raises(DataError, match="1 image.*missing.*n001_0.png"):
        load_source("image_list", {"root": str(tmp_path), "lists": lists})


def test_image_folder_streams_through_dataloader(tmp_path):
    write_image_folder(tmp_path)
    src = load_source("image_folder", {"root": str(tmp_path), "image_size": 16})
    assert not src.in_memory and len(src.paths["train"]) == 150
    samples, counts = curate(src, CurationConfig(profile="pareto", n_max=20, n_min=2, val_per_class=2,
                                                 open_classes=("class4",)), seed=0)
    assert counts["n_train"].max() == 20 and counts["n_train"].min() >= 2
    split = load_split(src, samples, "train", workers=1)
    info = dataset_info(samples, src)
    import torch

    (idx, x), = list(split.iterate(1000, info, torch.device("cpu"), train=True))
    assert x.shape == (len(split), 3, 16, 16) and x.dtype == torch.float32
