"""Tensors for training and inference, built from the curated samples table.

Small sources (Fashion-MNIST) live in memory as one uint8 tensor per split and are batched by
indexing, with no per-sample Python work; pixels become float on the target device per batch.
Training batches are augmented there too (:class:`Augment`): on the device's uint8 tensor, for
the whole batch at once, with draws keyed by (seed, epoch, batch) so a resumed run repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from .contracts import FeatureSet  # noqa: F401  (the trainer's TrainRun types its parent features with it)
from .sources import SourceData, resolve_augment

AUGMENT_STREAM = 0xA6  # tags the augmentation draws apart from the sampler's, which share the seed


@dataclass(frozen=True)
class Augment:
    """A resolved training augmentation (``none`` | ``crop_flip`` | ``resized_crop_flip``) and
    the key of its draws: batch b of an iteration draws from ``default_rng([*key, tag, b])``
    (``key`` = (seed, epoch) for training batches), independent of device and of earlier batches."""

    kind: str
    key: tuple[int, ...] = ()
    pad: int = 4

    def rng(self, batch: int) -> np.random.Generator:
        return np.random.default_rng([*self.key, AUGMENT_STREAM, batch])


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Zero-pad (B, C, H, W) images by ``pad`` pixels on each side, cut the H x W window whose
    top-left corner is ``offsets`` (B, 2) = (row, col) in [0, 2 pad] of the padded image, and
    mirror it left-right where ``flips`` (B,) is true: torchvision's RandomCrop(size, padding=4)
    + RandomHorizontalFlip as LDAM-DRW and MFM (appendix B) use on CIFAR, for the whole batch in
    one gather. Zero = black, as pad happens before normalisation. Returns (B, C, H, W) with
    channels-last strides, on the images' device and dtype."""
    b, _, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    offsets = offsets.to(dev, torch.long)
    rows = offsets[:, :1] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = offsets[:, 1:] + torch.where(flips.to(dev, torch.bool)[:, None], w - 1 - cols, cols)  # (B, W)
    # advanced indices around the channel slice put their broadcast shape first: (B, H, W, C)
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def random_crop_flip(images: torch.Tensor, rng: np.random.Generator, pad: int = 4) -> torch.Tensor:
    """:func:`crop_flip` with offsets uniform in [0, 2 pad] and flips with probability 1/2."""
    n = images.shape[0]
    offsets = torch.from_numpy(rng.integers(0, 2 * pad + 1, size=(n, 2)))
    flips = torch.from_numpy(rng.random(n) < 0.5)
    return crop_flip(images, offsets, flips, pad)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the curated dataset."""

    num_classes: int
    in_channels: int
    class_counts: tuple[int, ...]  # training images per class, index = label
    mean: float = 0.5
    std: float = 0.5
    image_size: int = 0  # crop size of streamed images; side of in-memory images (0: not recorded)

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels,
                "class_counts": list(self.class_counts), "mean": self.mean, "std": self.std,
                "image_size": self.image_size}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DatasetInfo":
        return cls(int(d["num_classes"]), int(d["in_channels"]), tuple(int(c) for c in d["class_counts"]),
                   float(d.get("mean", 0.5)), float(d.get("std", 0.5)), int(d.get("image_size", 0)))


@dataclass
class SplitData:
    """One split: labels (N,) int64 and sample ids, with pixels either in memory (``images``:
    uint8 (N, C, H, W)) or streamed from image files (``paths``) through a DataLoader."""

    images: torch.Tensor | None
    labels: torch.Tensor
    sample_ids: np.ndarray
    split: str
    paths: np.ndarray | None = None
    workers: int = 0
    source: str = ""  # the source's registered name (what augment: auto resolves by)

    def __len__(self) -> int:
        return len(self.labels)

    def resolve_augment(self, augment: str) -> str:
        """``augment`` resolved for this split's images (:func:`longtail.sources.resolve_augment`)."""
        return resolve_augment(augment, self.source, streamed=self.images is None)

    def iterate(self, batch_size: int, info: "DatasetInfo", device: torch.device, *, order: np.ndarray | None = None,
                train: bool = False, channels_last: bool = False,
                augment: Augment | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (indices, normalised float input on ``device``) batch by batch, in ``order``.

        ``train``: a training pass (a last one-sample batch joins the one before) that applies
        ``augment`` (none when None); otherwise the images are returned as they are.
        In memory: tensor slicing and augmentation on the device, no per-sample Python work.
        Streamed: a DataLoader with workers and pinned memory decodes each image (and with
        ``resized_crop_flip`` augments it, torchvision transforms v2)."""
        chunks = list(batches(len(self), batch_size, order))
        if train and len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm cannot train on one sample
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        kind = augment.kind if train and augment is not None else "none"
        if kind not in ("none", "crop_flip", "resized_crop_flip"):
            raise ValueError(f"augment '{kind}' is not resolved; resolve it with SplitData.resolve_augment")
        if self.images is not None:
            if kind == "resized_crop_flip":
                raise ValueError("augment resized_crop_flip decodes image files; these images are in memory")
            for b, idx in enumerate(chunks):
                images = self.images[idx]
                if kind == "crop_flip":
                    images = random_crop_flip(images.to(device, non_blocking=True), augment.rng(b), augment.pad)
                yield idx, to_input(images, info, device, channels_last)
            return
        if kind == "crop_flip":
            raise ValueError("augment crop_flip pads and crops in-memory images; these images stream from files")
        from .streaming import stream_batches

        for idx, x in stream_batches(self.paths, chunks, info, train=kind == "resized_crop_flip",
                                     workers=self.workers, pin_memory=device.type == "cuda"):
            x = x.to(device, non_blocking=True)
            yield idx, x.contiguous(memory_format=torch.channels_last) if channels_last else x


def dataset_info(samples: pd.DataFrame, source: SourceData) -> DatasetInfo:
    train = samples[samples["split"] == "train"]
    num_classes = int(samples.loc[samples["label"] >= 0, "label"].max()) + 1
    counts = np.bincount(train["label"].to_numpy(), minlength=num_classes)
    if not source.in_memory:  # streamed RGB files, normalised with ImageNet statistics per channel
        return DatasetInfo(num_classes, 3, tuple(int(c) for c in counts), image_size=source.image_size)
    sample_img = next(iter(source.images.values()))
    in_channels = 1 if sample_img.ndim == 3 else int(sample_img.shape[-1])
    # normalisation statistics of the training split only (no val/test leakage)
    imgs = _gather(source, train)
    x = imgs.float() / 255
    return DatasetInfo(num_classes, in_channels, tuple(int(c) for c in counts),
                       float(x.mean()), float(x.std()), int(sample_img.shape[1]))


def _gather(source: SourceData, rows: pd.DataFrame) -> torch.Tensor:
    parts = []
    for src, grp in rows.groupby("source", sort=False):
        arr = source.images[src][grp["source_index"].to_numpy()]
        parts.append((grp.index.to_numpy(), arr))
    if not parts:
        first = next(iter(source.images.values()))
        shape = (0, *first.shape[1:])
        arr = np.zeros(shape, dtype=np.uint8)
    else:
        order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
        arr = np.concatenate([p[1] for p in parts])[order]
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def load_split(source: SourceData, samples: pd.DataFrame, split: str, workers: int = 0) -> SplitData:
    """The images of one split, in the samples table's row order: gathered into memory for small
    sources, or as file paths streamed by a DataLoader with ``workers`` processes."""
    rows = samples[samples["split"] == split].reset_index(drop=True)
    labels = torch.tensor(rows["label"].to_numpy(), dtype=torch.int64)
    ids = rows["sample_id"].to_numpy()
    if source.in_memory:
        return SplitData(_gather(source, rows), labels, ids, split, source=source.name)
    paths = np.array([source.paths[s][i] for s, i in zip(rows["source"], rows["source_index"])], dtype=object)
    return SplitData(None, labels, ids, split, paths=paths, workers=workers, source=source.name)


def to_input(images: torch.Tensor, info: DatasetInfo, device: torch.device,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float on ``device``, contiguous (channels-last or not)."""
    x = images.to(device, non_blocking=True).float().div_(255).sub_(info.mean).div_(info.std)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    idx = np.arange(n) if order is None else order
    for s in range(0, len(idx), batch_size):
        yield idx[s: s + batch_size]
