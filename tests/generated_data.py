"""Tiny datasets in the real layouts of the large benchmarks (CIFAR python pickles, an ImageFolder
tree of PNGs, ImageNet-LT-style split lists), generated for the tests."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


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


def write_image_folder(root: Path, classes: int = 5, train: int | Sequence[int] = 30, test: int = 4) -> None:
    """root/{train,test}/class<c>/<i>.png; ``train`` is one count for every class or one per class
    (a natural long tail)."""
    rng = np.random.default_rng(0)
    counts = [train] * classes if isinstance(train, int) else list(train)
    for c in range(classes):
        for split, n in (("train", counts[c]), ("test", test)):
            for i in range(n):
                write_png(root / split / f"class{c}" / f"{i}.png", 40 * c + 20, rng)


def write_lists(root: Path, counts: tuple[int, ...] = (10, 5, 2), per_class_eval: int = 2, open_images: int = 3,
                names: dict[str, str] | None = None) -> dict:
    """ImageNet-LT-style lists (lines ``relpath label``, open images labelled -1): ``counts`` train
    images per class, ``per_class_eval`` val and test images per class, ``open_images`` open ones.
    ``names``: split -> list file name (default LT_<split>.txt); a split missing from it is not
    written (e.g. no open list). Returns split -> list file name."""
    names = names or {split: f"LT_{split}.txt" for split in ("train", "val", "test", "open")}
    rng = np.random.default_rng(1)
    lines = {"train": [], "val": [], "test": [], "open": []}
    for c, n in enumerate(counts):
        for split, k in (("train", n), ("val", per_class_eval), ("test", per_class_eval)):
            for i in range(k):
                rel = f"images/{split}/n{c:03d}_{i}.png"
                write_png(root / rel, 60 * c + 30, rng)
                lines[split].append(f"{rel} {c}")
    for i in range(open_images):
        rel = f"images/open/x_{i}.png"
        write_png(root / rel, 250, rng)
        lines["open"].append(f"{rel} -1")
    for split, ls in lines.items():
        if split in names:
            (root / names[split]).write_text("\n".join(ls) + "\n")
    return dict(names)
