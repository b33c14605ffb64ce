"""Training augmentation: the batched pad-crop-flip against hand-cut windows, its seeding, what
``augment: auto`` resolves to per source, and that only training passes are augmented."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from longtail import trainer
from longtail.curation import CurationConfig, curate
from longtail.data import Augment, DatasetInfo, SplitData, crop_flip, random_crop_flip, to_input
from longtail.device import select_device
from longtail.methods import create_method, make_config
from longtail.methods.config import ParamError
from longtail.pipeline import train
from longtail.sources import SourceData, resolve_augment
from longtail.trainer import TrainRun

INFO = DatasetInfo(2, 3, (4, 4), mean=0.5, std=0.25)


def images(n: int = 4, c: int = 3, h: int = 5, w: int = 6) -> torch.Tensor:
    """uint8 (n, c, h, w) whose every pixel is distinct (value = its flat position + 1, mod 256)."""
    return ((torch.arange(n * c * h * w) % 255) + 1).to(torch.uint8).reshape(n, c, h, w)


def hand_crop(img: torch.Tensor, top: int, left: int, flip: bool, pad: int) -> torch.Tensor:
    """One (C, H, W) image cut by hand: a zero canvas with the image pasted at (pad, pad), the
    H x W window at (top, left), then reversed along W."""
    c, h, w = img.shape
    canvas = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    canvas[:, pad:pad + h, pad:pad + w] = img
    out = canvas[:, top:top + h, left:left + w]
    return out.flip(-1) if flip else out


def test_crop_flip_equals_hand_cut_windows():
    x = images()
    offsets = torch.tensor([[0, 0], [4, 4], [8, 8], [1, 7]])  # corner, centre (= no shift), far corner, mixed
    flips = torch.tensor([False, True, False, True])
    out = crop_flip(x, offsets, flips, pad=4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(len(x)):
        assert torch.equal(out[i], hand_crop(x[i], *offsets[i].tolist(), bool(flips[i]), 4)), i
    # spelled out on image 0 at offset (0, 0): the top-left 4x4 is padding, pixel (4, 4) is x[0, :, 0, 0]
    assert not out[0, :, :4, :].any() and not out[0, :, :, :4].any()
    assert torch.equal(out[0, :, 4, 4], x[0, :, 0, 0])
    # offset (4, 4) without the pad's shift is the image itself; flipped, its mirror
    assert torch.equal(out[1], x[1].flip(-1))


def test_crop_flip_keeps_channels_last_strides():
    out = crop_flip(images(), torch.full((4, 2), 4), torch.zeros(4, dtype=torch.bool))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_random_draws_follow_the_key():
    x = images(16)
    a = random_crop_flip(x, Augment("crop_flip", (3, 1)).rng(0))
    assert torch.equal(a, random_crop_flip(x, Augment("crop_flip", (3, 1)).rng(0)))  # same seed, epoch, batch
    assert not torch.equal(a, random_crop_flip(x, Augment("crop_flip", (3, 2)).rng(0)))  # next epoch
    assert not torch.equal(a, random_crop_flip(x, Augment("crop_flip", (4, 1)).rng(0)))  # other seed
    # the draws themselves: offsets in [0, 8], both flip states
    rng = Augment("crop_flip", (3, 1)).rng(0)
    offsets, flips = rng.integers(0, 9, size=(16, 2)), rng.random(16) < 0.5
    assert torch.equal(a, crop_flip(x, torch.from_numpy(offsets), torch.from_numpy(flips)))


def split(n: int = 6, source: str = "cifar10") -> SplitData:
    labels = torch.arange(n) % 2
    return SplitData(images(n, 3, 8, 8), labels, np.arange(n).astype(str), "train", source=source)


def test_iterate_augments_training_passes_only():
    s = split()
    aug = Augment("crop_flip", (0, 5))
    plain = [x for _, x in s.iterate(4, INFO, torch.device("cpu"))]
    evals = [x for _, x in s.iterate(4, INFO, torch.device("cpu"), augment=aug)]  # train=False
    for p, e in zip(plain, evals):
        assert torch.equal(p, e)
    assert torch.equal(torch.cat(plain), to_input(s.images, INFO, torch.device("cpu")))
    trained = list(s.iterate(4, INFO, torch.device("cpu"), train=True, augment=aug))
    for b, (idx, x) in enumerate(trained):
        expected = to_input(random_crop_flip(s.images[idx], aug.rng(b)), INFO, torch.device("cpu"))
        assert torch.equal(x, expected)
    assert not torch.equal(torch.cat([x for _, x in trained]), torch.cat(plain))
    # augment none: a training pass returns the images as they are
    none = [x for _, x in s.iterate(4, INFO, torch.device("cpu"), train=True, augment=Augment("none", (0, 5)))]
    assert torch.equal(torch.cat(none), torch.cat(plain))


def test_channels_last_batches_stay_channels_last():
    (_, x), = list(split(4).iterate(4, INFO, torch.device("cpu"), train=True, channels_last=True,
                                    augment=Augment("crop_flip", (0, 0))))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("source, expected", [
    ("cifar10", "crop_flip"), ("cifar100", "crop_flip"), ("fashion_mnist", "none"), ("glyphs", "none"),
    ("image_list", "resized_crop_flip"), ("image_folder", "resized_crop_flip"),
])
def test_auto_resolves_per_source(source, expected):
    assert resolve_augment("auto", source) == expected
    assert resolve_augment("none", source) == "none"


def test_augmentations_a_source_cannot_take_are_refused():
    with pytest.raises(ValueError, match="crop_flip pads and crops in-memory images"):
        resolve_augment("crop_flip", "image_list")
    with pytest.raises(ValueError, match="resized_crop_flip decodes image files"):
        resolve_augment("resized_crop_flip", "cifar10")
    assert resolve_augment("crop_flip", "fashion_mnist") == "crop_flip"  # possible where asked for
    assert split(source="glyphs").resolve_augment("auto") == "none"


def test_config_checks_augment_and_select():
    assert make_config("plain", {}).augment == "auto" and make_config("plain", {}).select == "last"
    with pytest.raises(ParamError, match="augment 'flip' is unknown"):
        make_config("plain", {"augment": "flip"})
    with pytest.raises(ParamError, match="select 'best' is unknown"):
        make_config("plain", {"select": "best"})
    with pytest.raises(ParamError, match="cached features"):
        make_config("crt", {"augment": "crop_flip"})


class Recorder:
    """Wraps a method's training_loss to keep every training batch's input."""

    def __init__(self, method) -> None:
        self.inner, self.seen = method.training_loss, []
        method.training_loss = self

    def __call__(self, model, batch):
        self.seen.append((batch.epoch, batch.index, batch.idx.copy(), batch.x.detach().clone()))
        return self.inner(model, batch)


def test_trainer_augments_with_draws_keyed_by_seed_and_epoch(tmp_path):
    pixels = torch.randint(0, 256, (12, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    s = SplitData(pixels, torch.arange(12) % 2, np.arange(12).astype(str), "train", source="cifar10")
    method = create_method("plain", {"backbone": "lenet", "epochs": 2, "batch_size": 4, "augment": "auto"})
    rec = Recorder(method)
    info = DatasetInfo(2, 3, (6, 6), mean=0.5, std=0.25)
    torch.manual_seed(0)
    model = method.build_model(info)
    run = TrainRun(s, s, info, select_device("cpu", 1), 7, tmp_path / "ck.pt", "fp", progress=False)
    trainer.fit(method, model, run)
    assert len(rec.seen) == 6  # 2 epochs x 3 batches
    for epoch, b, idx, x in rec.seen:
        aug = Augment("crop_flip", (7, epoch))  # auto on cifar10, keyed by (run seed, epoch)
        assert torch.equal(x, to_input(random_crop_flip(s.images[idx], aug.rng(b)), info, torch.device("cpu")))


@pytest.mark.parametrize("source_name, expected", [("cifar10", "crop_flip"), ("fashion_mnist", "none")])
def test_pipeline_records_the_resolved_augment_and_the_selected_epoch(source_name, expected, tmp_path):
    rng = np.random.default_rng(0)
    labels = {"train": np.repeat(np.arange(4), 24), "test": np.repeat(np.arange(4), 5)}
    imgs = {s: np.clip(40 + 50 * y[:, None, None] + rng.normal(0, 30, (len(y), 28, 28)), 0, 255).astype(np.uint8)
            for s, y in labels.items()}
    source = SourceData(source_name, ("a", "b", "c", "d"), labels, images=imgs)
    samples = curate(source, CurationConfig(n_max=16, imbalance_factor=4, val_per_class=3), seed=0)[0]
    params = {"backbone": "lenet", "epochs": 3, "batch_size": 16, "lr": 0.05, "select": "best_val"}
    ckpt, history = train("plain", params, samples, source, seed=0, device=select_device("cpu", 1),
                          checkpoint=tmp_path / "ck.pt", progress=False)
    assert ckpt["config"]["augment"] == expected and ckpt["config"]["select"] == "best_val"
    best = int(history.loc[history["val_acc"] == history["val_acc"].max(), "epoch"].iloc[0])
    assert history["selected"].tolist() == [e == best for e in (1, 2, 3)]
    assert ckpt["select"] == "best_val" and ckpt["selected_epoch"] == best
    saved = torch.load(tmp_path / "ck.pt", weights_only=False)["best"]
    assert saved["epoch"] == best
    assert all(torch.equal(ckpt["model"][k], saved["model"][k]) for k in ckpt["model"])
    assert dataclasses.is_dataclass(make_config("plain", ckpt["config"]))  # the recorded config loads back
