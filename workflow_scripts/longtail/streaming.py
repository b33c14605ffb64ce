"""Streaming image files from disk: a DataLoader with workers, pinned memory and the standard
torchvision (transforms v2) augmentations, for datasets too large to hold in memory
(ImageNet-LT, Places-LT, SUN-LT, MIT-67, any ImageFolder)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# torchvision's ImageNet statistics: the pretrained weights expect them, scratch runs do not mind.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(image_size: int, train: bool):
    """RandomResizedCrop + flip for training; resize (256/224 of the crop) + center crop for eval."""
    from torchvision.transforms import v2

    if train:
        geo = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geo = [v2.Resize(int(round(image_size * 256 / 224)), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose([v2.ToImage(), *geo, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageFiles(Dataset):
    """Decodes one RGB image file per item and applies ``transform``."""

    def __init__(self, paths: Sequence[str], transform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def stream_batches(paths: np.ndarray, chunks: list[np.ndarray], info, *, train: bool, workers: int = 0,
                   pin_memory: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (indices, batch (B, 3, S, S) float) for each index chunk, in order."""
    size = int(getattr(info, "image_size", 0) or 224)
    loader = DataLoader(ImageFiles(list(paths), build_transform(size, train)), batch_sampler=chunks,
                        num_workers=workers, pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    yield from zip(chunks, loader)
