"""Dataset sources behind one interface.

A source yields, for each of its own splits ("train", "test"), the labels of every image and a
way to fetch the pixels of selected images. Curation only needs labels; training fetches pixels
for the sample rows it was given. Register a new source with ``@register_source``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .registry import Registry

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
    image_size: int = 224  # crop size when streamed
    provenance: Mapping[str, str] = field(default_factory=dict)  # e.g. split-list checksums
    fixed_splits: bool = False  # the source's own splits are the curated ones (published lists)

    @property
    def in_memory(self) -> bool:
        return bool(self.images)


SourceFn = Callable[[Mapping], SourceData]
SOURCES: Registry[SourceFn] = Registry("dataset source")
register_source = SOURCES.register


def available_sources() -> list[str]:
    return SOURCES.names()


def load_source(name: str, params: Mapping | None = None) -> SourceData:
    """Load the source called ``name`` with its config ``params`` (a dataset's ``source`` block)."""
    try:
        factory = SOURCES.get(name)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return factory(dict(params or {}))


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


# --- CIFAR-10 / CIFAR-100 (python pickle layout) ---------------------------------------------

_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"label_names", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_label_names", b"fine_labels"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read CIFAR file {path}: {exc}; re-download it") from exc


def _cifar(name: str, params: Mapping) -> SourceData:
    folder, train_files, test_files, meta_file, names_key, labels_key = _CIFAR[name]
    root = Path(os.path.expanduser(str(params.get("root") or "~/.cache/torchvision")))
    if params.get("download"):
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(str(root), train=True, download=True)
    base = root / folder
    missing = [f for f in [*train_files, *test_files, meta_file] if not (base / f).is_file()]
    if missing:
        raise DataError(f"{name}: {base} lacks {missing}; set source.root to the folder holding {folder}/ "
                        "or source.download: true (needs internet)")
    names = tuple(n.decode() for n in _unpickle(base / meta_file)[names_key])
    images, labels = {}, {}
    for split, files in (("train", train_files), ("test", test_files)):
        batches = [_unpickle(base / f) for f in files]
        data = np.concatenate([b[b"data"] for b in batches])
        images[split] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # (N, 32, 32, 3)
        labels[split] = np.concatenate([np.asarray(b[labels_key], dtype=np.int64) for b in batches])
    return SourceData(name, names, labels, images=images)


@register_source("cifar10")
def cifar10(params: Mapping) -> SourceData:
    """CIFAR-10 from ``root``/cifar-10-batches-py (torchvision's download layout)."""
    return _cifar("cifar10", params)


@register_source("cifar100")
def cifar100(params: Mapping) -> SourceData:
    """CIFAR-100 (fine labels) from ``root``/cifar-100-python."""
    return _cifar("cifar100", params)


# --- image files: ImageFolder trees and published split lists ---------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


def _root(params: Mapping, what: str) -> Path:
    if not params.get("root"):
        raise DataError(f"{what}: set source.root to the folder holding the images")
    root = Path(os.path.expanduser(str(params["root"])))
    if not root.is_dir():
        raise DataError(f"{what}: source.root {root} is not a folder")
    return root


@register_source("image_folder")
def image_folder(params: Mapping) -> SourceData:
    """An ImageFolder tree: ``root/<train_dir>/<class>/*.jpg`` and ``root/<test_dir>/<class>/...``.

    Curation then applies its profile (e.g. Pareto for ImageNet-LT/Places-LT built from the full
    datasets, ``none`` for SUN-397's natural long tail or MIT-67's own split); extra classes become
    the open set through ``open_classes``."""
    root = _root(params, "image_folder")
    split_dirs = {"train": params.get("train_dir", "train"), "test": params.get("test_dir", "test")}
    names = sorted(d.name for d in (root / split_dirs["train"]).iterdir() if d.is_dir()) \
        if (root / split_dirs["train"]).is_dir() else []
    if not names:
        raise DataError(f"image_folder: {root / split_dirs['train']} has no class folders")
    labels, paths = {}, {}
    for split, sub in split_dirs.items():
        lab, pth = [], []
        for c, cname in enumerate(names):
            folder = root / sub / cname
            files = sorted(f for f in folder.iterdir() if f.suffix in IMAGE_EXTENSIONS) if folder.is_dir() else []
            pth += [str(f) for f in files]
            lab += [c] * len(files)
        labels[split], paths[split] = np.asarray(lab, dtype=np.int64), np.asarray(pth, dtype=object)
    return SourceData("image_folder", tuple(names), labels, paths=paths,
                      image_size=int(params.get("image_size", 224)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@register_source("image_list")
def image_list(params: Mapping) -> SourceData:
    """Published split lists (ImageNet-LT, Places-LT): one ``relpath label`` per line, open-set
    list labelled -1, images under ``root``. The lists ARE the splits (curation profile
    ``lists``); every listed image must exist, and the lists' SHA-256 are recorded."""
    root = _root(params, "image_list")
    lists = dict(params.get("lists") or {})
    if "train" not in lists or "test" not in lists:
        raise DataError("image_list: source.lists needs at least train and test list files")
    labels, paths, provenance = {}, {}, {}
    for split, list_file in lists.items():
        lf = Path(os.path.expanduser(str(list_file)))
        if not lf.is_absolute():
            lf = root / lf
        if not lf.is_file():
            raise DataError(f"image_list: list file for split '{split}' not found: {lf}")
        rel, lab = [], []
        for n, line in enumerate(lf.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{lf}:{n}: expected 'relpath label', got '{line.strip()}'")
            rel.append(parts[0])
            lab.append(int(parts[1]))
        full = [root / r for r in rel]
        missing = [str(p) for p in full if not p.is_file()]
        if missing:
            raise DataError(f"image_list: {len(missing)} image(s) of {lf.name} missing under {root}, "
                            f"e.g. {missing[0]}; fix source.root or the list")
        labels[split] = np.asarray(lab, dtype=np.int64)
        paths[split] = np.asarray([str(p) for p in full], dtype=object)
        provenance[f"{split}_list_sha256"] = sha256(lf)
    n_classes = int(max(labels["train"].max(), labels["test"].max())) + 1
    names = tuple(params.get("class_names") or [f"class_{i:04d}" for i in range(n_classes)])
    return SourceData("image_list", names, labels, paths=paths, image_size=int(params.get("image_size", 224)),
                      provenance=provenance, fixed_splits=True)


# --- characters rendered from Debian font packages (Glyph-LT) ----------------------------------


@register_source("glyphs")
def glyphs(params: Mapping) -> SourceData:
    """The source's classes (EMNIST-balanced's 47 characters by default) rendered from every
    typeface of pinned Debian font packages, one image per (typeface, class), cached once per
    machine; its train / val / meta / test splits hold disjoint typefaces. Options and filters:
    :class:`longtail.glyphs.GlyphSettings` and the module's docstring."""
    from .glyphs import GlyphSettings, build_glyphs, glyph_source_data

    try:
        settings = GlyphSettings.from_params(params)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return SourceData(**glyph_source_data(build_glyphs(settings)))
