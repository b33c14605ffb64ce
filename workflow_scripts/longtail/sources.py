"""Dataset sources behind one interface.

A source yields, for each of its own splits ("train", "test"), the labels of every image and a
way to fetch the pixels of selected images. Curation only needs labels; training fetches pixels
for the sample rows it was given. Register a new source with ``@register_source``.

Where data is read from: a source given ``root`` reads only that folder (a relative root is
resolved against the working directory, which is Snakemake's ``--directory`` for a job) and fails
naming the files it lacks; nothing falls back to another copy. Every source logs the files it read
and records them (path and SHA-256, or the image listing's SHA-256 for folders of images) in
``SourceData.provenance``, which curation saves in the samples parquet's metadata and training puts
in the checkpoint fingerprint.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from .registry import Registry

log = logging.getLogger(__name__)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


# Training augmentations (``augment`` of a trained method's config). ``auto`` resolves to the
# source's standard one: CIFAR's zero-pad 4 + random 32x32 crop + horizontal flip (LDAM-DRW,
# MW-Net, MFM appendix B); for streamed photos the random resized crop + flip of ImageNet
# training; none for Fashion-MNIST (MFM appendix C.3 trains LeNet without augmentation), glyphs
# (a mirrored character is another character or none) and any other in-memory source.
AUGMENTS = ("auto", "none", "crop_flip", "resized_crop_flip")
STREAMED_SOURCES = ("image_folder", "image_list")
AUTO_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip"}


def resolve_augment(augment: str, source: str, streamed: bool | None = None) -> str:
    """The augmentation ``augment`` means for images of ``source`` (``streamed``: read from
    files; default: whether ``source`` is a file-list source). Raises ValueError, naming the
    fix, for an augmentation the source's images cannot take."""
    streamed = source in STREAMED_SOURCES if streamed is None else streamed
    if augment not in AUGMENTS:
        raise ValueError(f"augment '{augment}' is unknown; choose one of {list(AUGMENTS)}")
    if augment == "auto":
        return "resized_crop_flip" if streamed else AUTO_AUGMENT.get(source, "none")
    if augment == "crop_flip" and streamed:
        raise ValueError(f"augment crop_flip pads and crops in-memory images; source '{source}' streams files: "
                         "use resized_crop_flip, auto or none")
    if augment == "resized_crop_flip" and not streamed:
        raise ValueError(f"augment resized_crop_flip decodes image files; source '{source}' is held in memory: "
                         "use crop_flip, auto or none")
    return augment


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
    # what was read (source_root, source_files: [[path, sha256], ...], source_options; list or
    # array checksums), as strings: saved in the samples parquet, part of the checkpoint fingerprint
    provenance: Mapping[str, str] = field(default_factory=dict)
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


# --- where a source reads from, and what it read ---------------------------------------------


def resolve_root(params: Mapping, what: str) -> Path | None:
    """``source.root`` as an absolute path, or None when not given. A relative root is resolved
    against the working directory (Snakemake runs every job in its ``--directory``)."""
    raw = params.get("root")
    if raw is None:
        return None
    if not str(raw).strip():
        raise DataError(f"{what}: source.root is empty; give the data folder or leave root out")
    path = Path(os.path.expanduser(str(raw)))
    return path if path.is_absolute() else Path.cwd() / path


def describe_root(params: Mapping, root: Path) -> str:
    """``source.root /abs/path`` and, for a relative root, what it was resolved against."""
    raw = str(params.get("root"))
    if Path(os.path.expanduser(raw)).is_absolute():
        return f"source.root {root}"
    return f"source.root {root} ('{raw}' resolved against the working directory {Path.cwd()})"


def require_folder(params: Mapping, root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{what}: {describe_root(params, root)} does not exist; fix source.root")
    if not root.is_dir():
        raise DataError(f"{what}: {describe_root(params, root)} is not a folder; fix source.root")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_provenance(what: str, folder: Path, files: Iterable[Path], options: Mapping | None = None) -> dict[str, str]:
    """Log each file read (path, SHA-256) and return them as provenance entries."""
    read = [[str(f), sha256(f)] for f in files]
    for path, digest in read:
        log.info("%s: read %s (sha256 %s)", what, path, digest)
    return {"source_root": str(folder), "source_files": json.dumps(read),
            "source_options": json.dumps(dict(options or {}), sort_keys=True)}


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
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes); re-install or re-download it")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
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


FASHION_MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _torchvision_root(params: Mapping) -> Path:
    return Path(os.path.expanduser(str(params.get("torchvision_root") or "~/.cache/torchvision")))


def fashion_mnist_candidates(params: Mapping) -> list[Path]:
    """Folders searched for the Fashion-MNIST IDX files, in order: only ``root`` (flat or in
    torchvision's FashionMNIST/raw layout) when it is given, else Debian's copy, then torchvision's."""
    root = resolve_root(params, "fashion_mnist")
    if root is not None:
        return [root, root / "FashionMNIST" / "raw"]
    return [DEBIAN_FASHION_MNIST, _torchvision_root(params) / "FashionMNIST" / "raw"]


@register_source("fashion_mnist")
def fashion_mnist(params: Mapping) -> SourceData:
    """Fashion-MNIST from ``root`` when given (nothing else), else Debian's dataset-fashion-mnist,
    else torchvision's layout under ``torchvision_root``.

    With ``download: true`` (and internet) torchvision fetches it first, into ``root`` when given,
    else into ``torchvision_root``."""
    root = resolve_root(params, "fashion_mnist")
    if params.get("download"):
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(root or _torchvision_root(params)), train=train, download=True)
    if root is not None:
        require_folder(params, root, "fashion_mnist")
    searched = fashion_mnist_candidates(params)
    stems = [stem for pair in FASHION_MNIST_STEMS.values() for stem in pair]
    found = [{stem: _idx_file(folder, stem) for stem in stems} for folder in searched]
    complete = [k for k, f in enumerate(found) if all(f.values())]
    if not complete:
        if root is not None:
            best = max(range(len(searched)), key=lambda k: sum(f is not None for f in found[k].values()))
            lacks = [f"{stem}[.gz]" for stem, f in found[best].items() if f is None]
            raise DataError(
                f"fashion_mnist: {describe_root(params, root)} lacks {', '.join(lacks)} (looked in "
                f"{' and '.join(str(r) for r in searched)}); put the four IDX files there, or leave root out "
                "to use Debian's dataset-fashion-mnist"
            )
        raise DataError(
            "Fashion-MNIST not found; looked in " + ", ".join(str(r) for r in searched)
            + ". Fix: `apt-get install dataset-fashion-mnist`, or set datasets.<name>.source.root "
            "to a folder with the IDX files, or set source.download: true (needs internet)."
        )
    folder, files = searched[complete[0]], found[complete[0]]
    images, labels = {}, {}
    for split, (img_stem, lab_stem) in FASHION_MNIST_STEMS.items():
        img_f, lab_f = files[img_stem], files[lab_stem]
        images[split] = read_idx(img_f)
        labels[split] = read_idx(lab_f).astype(np.int64)
        if len(images[split]) != len(labels[split]):
            raise DataError(f"{img_f} and {lab_f} disagree on the number of images; re-install them")
    provenance = files_provenance("fashion_mnist", folder, files.values())
    return SourceData("fashion_mnist", FASHION_MNIST_CLASSES, labels, images=images, provenance=provenance)


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
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR file {path} (truncated or corrupt: {exc}); re-download it") from exc


def _cifar_batch(path: Path, labels_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,)) of one CIFAR batch file, checked."""
    batch = _unpickle(path)
    data = np.asarray(batch.get(b"data")) if isinstance(batch, dict) else None
    lab = np.asarray(batch.get(labels_key, []), dtype=np.int64) if isinstance(batch, dict) else None
    if data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(lab):
        raise DataError(f"CIFAR file {path} is truncated or corrupt (expected N x 3072 pixels and N "
                        f"'{labels_key.decode()}'); re-download it")
    return data, lab


def _cifar(name: str, params: Mapping) -> SourceData:
    folder, train_files, test_files, meta_file, names_key, labels_key = _CIFAR[name]
    root = resolve_root(params, name)
    if params.get("download"):
        from torchvision.datasets import CIFAR10, CIFAR100

        target = root or Path(os.path.expanduser("~/.cache/torchvision"))
        (CIFAR10 if name == "cifar10" else CIFAR100)(str(target), train=True, download=True)
    if root is None:
        root = Path(os.path.expanduser("~/.cache/torchvision"))
        where = f"{root} (the default; no source.root given)"
    else:
        require_folder(params, root, name)
        where = describe_root(params, root)
    base = root / folder
    wanted = [*train_files, *test_files, meta_file]
    missing = [f"{folder}/{f}" for f in wanted if not (base / f).is_file()]
    if missing:
        raise DataError(f"{name}: {where} lacks {', '.join(missing)}; put torchvision's {folder}/ there, "
                        "or set source.download: true (needs internet)")
    meta = _unpickle(base / meta_file)
    if not isinstance(meta, dict) or names_key not in meta:
        raise DataError(f"CIFAR file {base / meta_file} is corrupt (no {names_key.decode()}); re-download it")
    names = tuple(n.decode() for n in meta[names_key])
    images, labels = {}, {}
    for split, files in (("train", train_files), ("test", test_files)):
        batches = [_cifar_batch(base / f, labels_key) for f in files]
        data = np.concatenate([d for d, _ in batches])
        images[split] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # (N, 32, 32, 3)
        labels[split] = np.concatenate([lab for _, lab in batches])
    provenance = files_provenance(name, base, [base / f for f in wanted])
    return SourceData(name, names, labels, images=images, provenance=provenance)


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
    root = resolve_root(params, what)
    if root is None:
        raise DataError(f"{what}: set source.root to the folder holding the images")
    require_folder(params, root, what)
    return root


def listing_sha256(root: Path, labels: Mapping[str, np.ndarray], paths: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of every split's (path relative to ``root``, label) in source order: which image
    each source index names. Image contents are not read (millions of files)."""
    h = hashlib.sha256()
    for split in sorted(paths):
        for p, lab in zip(paths[split], labels[split]):
            h.update(f"{split}\t{os.path.relpath(p, root)}\t{int(lab)}\n".encode())
    return h.hexdigest()


@register_source("image_folder")
def image_folder(params: Mapping) -> SourceData:
    """An ImageFolder tree: ``root/<train_dir>/<class>/*.jpg`` and ``root/<test_dir>/<class>/...``.

    Curation then applies its profile (e.g. Pareto for ImageNet-LT/Places-LT built from the full
    datasets, ``none`` for SUN-397's natural long tail or MIT-67's own split); extra classes become
    the open set through ``open_classes``. Records the listing's SHA-256 (:func:`listing_sha256`)."""
    root = _root(params, "image_folder")
    split_dirs = {"train": str(params.get("train_dir", "train")), "test": str(params.get("test_dir", "test"))}
    for split, sub in split_dirs.items():
        if not (root / sub).is_dir():
            raise DataError(f"image_folder: {describe_root(params, root)} lacks {sub}/ (the {split} images, one "
                            f"folder per class); fix source.root or source.{split}_dir")
    names = sorted(d.name for d in (root / split_dirs["train"]).iterdir() if d.is_dir())
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
        if not pth:
            raise DataError(f"image_folder: {root / sub} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                            "folders named as the train classes; fix source.root or the split folders")
        labels[split], paths[split] = np.asarray(lab, dtype=np.int64), np.asarray(pth, dtype=object)
    image_size = int(params.get("image_size", 224))
    digest = listing_sha256(root, labels, paths)
    log.info("image_folder: read the listing of %s: %d train / %d test images of %d classes (listing sha256 %s)",
             root, len(paths["train"]), len(paths["test"]), len(names), digest)
    provenance = {"source_root": str(root), "source_listing_sha256": digest,
                  "source_options": json.dumps({**split_dirs, "image_size": image_size}, sort_keys=True)}
    return SourceData("image_folder", tuple(names), labels, paths=paths, image_size=image_size,
                      provenance=provenance)


@register_source("image_list")
def image_list(params: Mapping) -> SourceData:
    """Published split lists (ImageNet-LT, Places-LT): one ``relpath label`` per line, open-set
    list labelled -1, images under ``root``. The lists ARE the splits (curation profile
    ``lists``); every listed image must exist, and the lists' SHA-256 are recorded."""
    root = _root(params, "image_list")
    lists = dict(params.get("lists") or {})
    if "train" not in lists or "test" not in lists:
        raise DataError("image_list: source.lists needs at least train and test list files")
    labels, paths, provenance, list_files = {}, {}, {}, []
    for split, list_file in lists.items():
        lf = Path(os.path.expanduser(str(list_file)))
        if not lf.is_absolute():
            lf = root / lf
        if not lf.is_file():
            raise DataError(f"image_list: list file for split '{split}' not found: {lf} "
                            f"(relative lists are read under {describe_root(params, root)})")
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
        list_files.append(lf)
    image_size = int(params.get("image_size", 224))
    n_classes = int(max(labels["train"].max(), labels["test"].max())) + 1
    names = tuple(params.get("class_names") or [f"class_{i:04d}" for i in range(n_classes)])
    provenance = files_provenance("image_list", root, list_files, {"image_size": image_size})
    for split, (_, digest) in zip(lists, json.loads(provenance["source_files"])):
        provenance[f"{split}_list_sha256"] = digest
    return SourceData("image_list", names, labels, paths=paths, image_size=image_size,
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


# --- far open set: pools of other sources beside the main one ----------------------------------


def convert_images(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C) converted to the per-image ``shape`` of another
    source ((H, W) grey or (H, W, 3) RGB): RGB -> grey by ITU-R 601 luma (0.299 R + 0.587 G +
    0.114 B, Pillow's "L"), grey -> RGB by repeating the channel, then a bilinear resize when the
    size differs (Pillow, which antialiases when shrinking)."""
    from PIL import Image

    grey = len(shape) == 2
    if images.ndim == 4 and grey:
        images = np.rint(images[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    elif images.ndim == 3 and not grey:
        images = np.repeat(images[..., None], shape[-1], axis=-1)
    if images.shape[1:3] == tuple(shape[:2]):
        return np.ascontiguousarray(images)
    size = (shape[1], shape[0])  # Pillow: (width, height)
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images]) \
        if len(images) else np.zeros((0, *shape), np.uint8)


def far_pool(i: int, split: str) -> str:
    """The ``source`` value of far-open rows of entry ``i`` (``curation.add_far_open``): the pool
    the train job adds to the main source (:func:`with_far_sources`)."""
    return f"far{i}-{split}"


def with_far_sources(source: SourceData, entries: Iterable[tuple[int, str, SourceData]]) -> SourceData:
    """``source`` with the far-open pools added: for each (entry index i, split, far source), the
    far source's ``split`` under the pool name :func:`far_pool` (as the rows' source names it). In memory: the images converted to the main source's shape and channels
    (:func:`convert_images`); streamed: the file paths (the stream resizes and converts to RGB).
    The main source's provenance is kept; each far source's rides under 'far<i>_'."""
    images, paths, labels = dict(source.images), dict(source.paths), dict(source.labels)
    provenance = dict(source.provenance)
    shape = next(iter(source.images.values())).shape[1:] if source.in_memory else None
    for i, split, far in entries:
        pool = far_pool(i, split)
        if split not in far.labels:
            raise DataError(f"far_open[{i}]: source '{far.name}' has no split '{split}' (it has {sorted(far.labels)})")
        if source.in_memory != far.in_memory:
            raise DataError(f"far_open[{i}]: source '{far.name}' is {'in memory' if far.in_memory else 'streamed'} "
                            f"but '{source.name}' is {'in memory' if source.in_memory else 'streamed'}; "
                            "pair in-memory sources with in-memory ones and image files with image files")
        labels[pool] = far.labels[split]
        if source.in_memory:
            images[pool] = convert_images(far.images[split], shape)
        else:
            paths[pool] = far.paths[split]
        provenance.update({f"far{i}_{k}": v for k, v in far.provenance.items()})
    return SourceData(source.name, source.class_names, labels, images=images, paths=paths,
                      image_size=source.image_size, provenance=provenance, fixed_splits=source.fixed_splits)
