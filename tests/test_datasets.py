"""Real loading code for the large benchmarks, on tiny datasets generated here in their real
layouts: CIFAR python pickles, an ImageFolder tree of PNGs, published split lists."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from longtail.curation import CurationConfig, curate
from longtail.data import dataset_info, load_split
from longtail.sources import DataError, load_source
from smk_runs import smoke_workflow

ROOT = Path(__file__).resolve().parents[1]


def write_cifar10(root: Path, per_class_train: int = 12, per_class_test: int = 4) -> None:
    """torchvision's cifar-10-batches-py layout: 5 train batches, test_batch, batches.meta."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), per_class_train)
    rng.shuffle(labels)
    for i, part in enumerate(np.array_split(labels, 5), 1):
        data = (rng.random((len(part), 3072)) * 255).astype(np.uint8)
        with open(base / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": data, b"labels": part.tolist()}, fh)
    test = np.repeat(np.arange(10), per_class_test)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({b"data": (rng.random((len(test), 3072)) * 255).astype(np.uint8), b"labels": test.tolist()}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)


def write_cifar100(root: Path, per_class_train: int = 3, per_class_test: int = 1) -> None:
    """torchvision's cifar-100-python layout: train, test, meta with fine labels."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, k in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(100), k)
        with open(base / name, "wb") as fh:
            pickle.dump({b"data": (rng.random((len(labels), 3072)) * 255).astype(np.uint8),
                         b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()}, fh)
    with open(base / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, fh)


def write_png(path: Path, colour: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.clip(rng.normal(colour, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def write_image_folder(root: Path, classes: int = 5, train: int = 30, test: int = 4) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for split, n in (("train", train), ("test", test)):
            for i in range(n):
                write_png(root / split / f"class{c}" / f"{i}.png", 40 * c + 20, rng)


def write_lists(root: Path) -> dict:
    """ImageNet-LT-style lists: train 10/5/2 images for 3 classes, val and test 2/class, open 3."""
    rng = np.random.default_rng(1)
    lines = {"train": [], "val": [], "test": [], "open": []}
    for c, n in enumerate((10, 5, 2)):
        for split, k in (("train", n), ("val", 2), ("test", 2)):
            for i in range(k):
                rel = f"images/{split}/n{c:03d}_{i}.png"
                write_png(root / rel, 60 * c + 30, rng)
                lines[split].append(f"{rel} {c}")
    for i in range(3):
        rel = f"images/open/x_{i}.png"
        write_png(root / rel, 250, rng)
        lines["open"].append(f"{rel} -1")
    lists = {}
    for split, ls in lines.items():
        (root / f"LT_{split}.txt").write_text("\n".join(ls) + "\n")
        lists[split] = f"LT_{split}.txt"
    return lists


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
    assert dataset_info(samples, src).in_channels == 3


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


@pytest.fixture(scope="module")
def layouts_run(tmp_path_factory):
    """One real workflow run over all three layouts: curation + 1 epoch + evaluation."""
    tmp = tmp_path_factory.mktemp("layouts")
    write_cifar10(tmp / "cifar", per_class_train=12, per_class_test=4)
    write_image_folder(tmp / "folder")
    write_cifar100(tmp / "cifar100", per_class_train=4, per_class_test=1)
    lists = write_lists(tmp / "lt")
    small = {"n_max": 10, "val_per_class": 1}
    cfg = {
        "seeds": [0], "device": "cpu", "open_threshold": 0.2,
        "datasets": {
            "cifar10_lt": {"source": {"name": "cifar10", "root": str(tmp / "cifar")},
                           "curation": {"profile": "exponential", "imbalance_factor": 10,
                                        "open_classes": ["c9"], **small}},
            "cifar100_lt": {"source": {"name": "cifar100", "root": str(tmp / "cifar100")},
                            "curation": {"profile": "exponential", "n_max": 3, "imbalance_factor": 3,
                                         "val_per_class": 1, "open_classes": ["f98", "f99"]}},
            "folder_lt": {"source": {"name": "image_folder", "root": str(tmp / "folder"), "image_size": 16},
                          "curation": {"profile": "pareto", "n_min": 2, "open_classes": ["class4"], **small}},
            "list_lt": {"source": {"name": "image_list", "root": str(tmp / "lt"), "lists": lists,
                                   "image_size": 16},
                        "curation": {"profile": "lists"}},
        },
        "runs": {"plain": {"method": "plain", "params": {"epochs": 1, "batch_size": 16, "backbone": "resnet10"}}},
        "tsne": {"runs": []},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    return smoke_workflow(tmp, tmp / "config.yaml")


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt", "folder_lt", "list_lt"])
def test_layouts_through_the_workflow(layouts_run, dataset):
    metrics = pd.read_parquet(layouts_run / f"results/metrics/{dataset}/plain/seed0.parquet")
    assert {"closed", "open"} <= set(metrics["setting"])
    preds = pd.read_parquet(layouts_run / f"results/predictions/{dataset}/plain/seed0.parquet")
    assert {"val", "test", "open"} <= set(preds["split"])
    assert (layouts_run / f"results/tables/{dataset}.md").read_text().count("plain") == 1
