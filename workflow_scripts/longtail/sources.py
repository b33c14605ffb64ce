"""Dataset sources behind one interface.

A source yields, for each of its own splits ("train", "test"), the labels of every image and a
way to fetch the pixels of selected images. Curation only needs labels; training fetches pixels
for the sample rows it was given. Register a new source with ``@register_source``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataError(RuntimeError):
    """Missing or corrupt input data; the message says what and how to fix it."""


@dataclass(frozen=True)
class SourceData:
    """Labels (and, for small data, pixels) of every image of a source.

    ``images[split]`` is a uint8 array (N, H, W) or (N, H, W, C) held in memory, or absent when the
    source streams files; then ``paths[split]`` lists one image file per label.
    """

    name: str
    class_names: tuple[str, ...]
    labels: Mapping[str, np.ndarray]
    images: Mapping[str, np.ndarray] = field(default_factory=dict)
    paths: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return bool(self.images)


SourceFn = Callable[[Mapping], SourceData]
_SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    def deco(fn: SourceFn) -> SourceFn:
        _SOURCES[name] = fn
        return fn

    return deco


def available_sources() -> list[str]:
    return sorted(_SOURCES)


def load_source(name: str, params: Mapping | None = None) -> SourceData:
    """Load the source called ``name`` with its config ``params`` (a dataset's ``source`` block)."""
    if name not in _SOURCES:
        raise DataError(f"unknown dataset source '{name}'; choose one of {available_sources()}")
    return _SOURCES[name](dict(params or {}))


# --- IDX files (MNIST family) -----------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) and check that its size matches its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; re-install or re-download it") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); re-install or re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header cut off); re-install or re-download it")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    body = len(raw) - header
    if body != expected:
        raise DataError(
            f"{path} is truncated or corrupt: header says {expected} bytes of data, file has {body}; "
            "re-install or re-download it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_candidates(params: Mapping) -> list[Path]:
    """Folders searched for the Fashion-MNIST IDX files, in order."""
    roots: list[Path] = []
    if params.get("root"):
        root = Path(os.path.expanduser(str(params["root"])))
        roots += [root, root / "FashionMNIST" / "raw"]
    roots.append(DEBIAN_FASHION_MNIST)
    tv_root = Path(os.path.expanduser(str(params.get("torchvision_root", "~/.cache/torchvision"))))
    roots.append(tv_root / "FashionMNIST" / "raw")
    return roots


@register_source("fashion_mnist")
def fashion_mnist(params: Mapping) -> SourceData:
    """Fashion-MNIST from a config root, Debian's dataset-fashion-mnist, or torchvision's layout.

    With ``download: true`` (and internet) torchvision fetches it into ``torchvision_root`` first.
    """
    if params.get("download"):
        from torchvision.datasets import FashionMNIST

        tv_root = os.path.expanduser(str(params.get("torchvision_root", "~/.cache/torchvision")))
        for train in (True, False):
            FashionMNIST(tv_root, train=train, download=True)
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    searched = fashion_mnist_candidates(params)
    for root in searched:
        files = {s: tuple(_idx_file(root, stem) for stem in pair) for s, pair in stems.items()}
        if all(f is not None for pair in files.values() for f in pair):
            break
    else:
        raise DataError(
            "Fashion-MNIST not found; looked in " + ", ".join(str(r) for r in searched)
            + ". Fix: `apt-get install dataset-fashion-mnist`, or set datasets.<name>.source.root "
            "to a folder with the IDX files, or set source.download: true (needs internet)."
        )
    images, labels = {}, {}
    for split, (img_f, lab_f) in files.items():
        images[split] = read_idx(img_f)
        labels[split] = read_idx(lab_f).astype(np.int64)
        if len(images[split]) != len(labels[split]):
            raise DataError(f"{img_f} and {lab_f} disagree on the number of images; re-install them")
    return SourceData("fashion_mnist", FASHION_MNIST_CLASSES, labels, images=images)
