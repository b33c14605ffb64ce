"""Tensors for training and inference, built from the curated samples table.

Small sources (Fashion-MNIST) live in memory as one uint8 tensor per split and are batched by
indexing, with no per-sample Python work; pixels become float on the target device per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from .sources import SourceData


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the curated dataset."""

    num_classes: int
    in_channels: int
    class_counts: tuple[int, ...]  # training images per class, index = label
    mean: float = 0.5
    std: float = 0.5

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels,
                "class_counts": list(self.class_counts), "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DatasetInfo":
        return cls(int(d["num_classes"]), int(d["in_channels"]), tuple(int(c) for c in d["class_counts"]),
                   float(d.get("mean", 0.5)), float(d.get("std", 0.5)))


# Cached embeddings by split: {split: (X (N, D) float32, labels (N,), sample_ids (N,))}
FeatureSet = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class SplitData:
    """One split in memory: images (N, C, H, W) uint8, labels (N,) int64, sample ids."""

    images: torch.Tensor
    labels: torch.Tensor
    sample_ids: np.ndarray
    split: str

    def __len__(self) -> int:
        return len(self.labels)


def dataset_info(samples: pd.DataFrame, source: SourceData) -> DatasetInfo:
    train = samples[samples["split"] == "train"]
    num_classes = int(samples.loc[samples["label"] >= 0, "label"].max()) + 1
    counts = np.bincount(train["label"].to_numpy(), minlength=num_classes)
    sample_img = next(iter(source.images.values()))
    in_channels = 1 if sample_img.ndim == 3 else int(sample_img.shape[-1])
    # normalisation statistics of the training split only (no val/test leakage)
    imgs = _gather(source, train)
    x = imgs.float() / 255
    return DatasetInfo(num_classes, in_channels, tuple(int(c) for c in counts),
                       float(x.mean()), float(x.std()))


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


def load_split(source: SourceData, samples: pd.DataFrame, split: str) -> SplitData:
    """Gather the images of one split, in the samples table's row order."""
    rows = samples[samples["split"] == split].reset_index(drop=True)
    return SplitData(_gather(source, rows), torch.tensor(rows["label"].to_numpy(), dtype=torch.int64),
                     rows["sample_id"].to_numpy(), split)


def to_input(images: torch.Tensor, info: DatasetInfo, device: torch.device,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float on ``device``."""
    x = images.to(device, non_blocking=True).float().div_(255).sub_(info.mean).div_(info.std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    idx = np.arange(n) if order is None else order
    for s in range(0, len(idx), batch_size):
        yield idx[s: s + batch_size]
