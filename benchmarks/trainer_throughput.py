"""Training throughput (images/s) of our trainer against a bare PyTorch loop and against the
per-sample PIL-decoding DataLoader that reference long-tail implementations use.

Same model (the backbone of config.yaml's ``plain`` run, ``--backbone``), batch size (128),
optimiser (SGD, momentum 0.9), threads and images (the curated Fashion-MNIST-LT train split of
config.yaml) for every variant, all in one run, rounds interleaved:

1. ours      ``longtail.trainer.fit`` with ``plain`` (sampler, val pass and checkpoint write each
             epoch, as every epoch of a real run has them)
2. bare      a hand-written loop over the same in-memory uint8 tensor (the floor of overhead)
3. PIL/wN    the reference pipeline (OLTR ``data/dataloader.py`` ``LT_Dataset``): one image file on
             disk per sample, opened per item with ``Image.open(f).convert(...)``, then torchvision
             ``ToTensor`` + ``Normalize``; a torch DataLoader (shuffle, default collate, workers
             started anew each epoch as in the reference) with N workers

Like for like: for in-memory sources our trainer applies no augmentation (``SplitData.iterate``
only normalises), so the baseline applies none either; it converts to ``L`` (the 1-channel image
the model takes) where OLTR converts ImageNet JPEGs to ``RGB``. LDAM-DRW's CIFAR pipeline adds
RandomCrop(32, padding=4) + RandomHorizontalFlip per sample, which would only slow the baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_throughput.py [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from longtail.curation import CurationConfig, curate  # noqa: E402
from longtail.data import DatasetInfo, SplitData, dataset_info, load_split, to_input  # noqa: E402
from longtail.device import DeviceSetup, select_device  # noqa: E402
from longtail.methods import create_method  # noqa: E402
from longtail.sources import load_source  # noqa: E402
from longtail.trainer import TrainRun, fit  # noqa: E402

BATCH = 128
HP = {"backbone": "lenet5", "batch_size": BATCH, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
      "schedule": "constant"}


def curated_splits(dataset: str = "glyph_lt") -> tuple[SplitData, SplitData, DatasetInfo]:
    """Train and val splits of a dataset of config.yaml, curated exactly as the workflow does."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ds = config["datasets"][dataset]
    cur = dict(ds["curation"])
    seed = cur.pop("seed", 0)
    cur.pop("far_open", None)  # the train and val splits only: no far open set to load
    cur.setdefault("shots", config.get("shots", {}))
    source = load_source(ds["source"]["name"], {k: v for k, v in ds["source"].items() if k != "name"})
    samples, _ = curate(source, CurationConfig.from_dict(cur), seed=seed)
    return load_split(source, samples, "train"), load_split(source, samples, "val"), dataset_info(samples, source)


def new_model(info: DatasetInfo, dev: DeviceSetup) -> tuple[object, torch.nn.Module]:
    method = create_method("plain", {**HP, "epochs": 1})
    torch.manual_seed(0)
    return method, method.build_model(info).to(dev.device)


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=HP["lr"], momentum=HP["momentum"], weight_decay=HP["weight_decay"])


def sync(dev: DeviceSetup) -> None:
    if dev.device.type == "cuda":
        torch.cuda.synchronize()


class Ours:
    """One more epoch of ``longtail.trainer.fit`` per call: the same model resumes from the
    checkpoint the previous call wrote (fit's restart path), so each call is a warm epoch like
    epochs 2.. of a real run, with its sampler, val pass and checkpoint write. Its time is the
    epoch's own ``seconds`` in fit's history (sampler, batches, val pass; taken just before the
    checkpoint write) plus ``ckpt_s``, the separately measured time of writing such a checkpoint:
    the restart (method and optimiser set-up, checkpoint load) is what a real run pays once, not
    per epoch. ``restart`` keeps the rest of each call's wall time, to print it."""

    def __init__(self, train: SplitData, val: SplitData, info: DatasetInfo, dev: DeviceSetup, tmp: Path,
                 ckpt_s: float) -> None:
        self.train, self.val, self.info, self.dev, self.ckpt_s = train, val, info, dev, ckpt_s
        self.ckpt = tmp / "checkpoint.pt"
        _, self.model = new_model(info, dev)
        self.calls = 0
        self.restart: list[float] = []  # whole call minus the epoch: fit's restart path

    def __call__(self) -> float:
        self.calls += 1
        t0 = time.perf_counter()
        method = create_method("plain", {**HP, "epochs": self.calls})  # constant lr: epochs only ends the loop
        run = TrainRun(self.train, self.val, self.info, self.dev, 0, self.ckpt, "bench", progress=False)
        with contextlib.redirect_stderr(io.StringIO()):  # its per-epoch log line
            history = fit(method, self.model, run)
        sync(self.dev)
        epoch = float(history["seconds"].iloc[-1]) + self.ckpt_s
        self.restart.append(time.perf_counter() - t0 - epoch)
        return epoch


class Bare:
    """One epoch of a hand-written loop over the in-memory uint8 tensor."""

    def __init__(self, train: SplitData, info: DatasetInfo, dev: DeviceSetup) -> None:
        self.images, self.labels, self.info, self.dev = train.images, train.labels, info, dev
        _, self.model = new_model(info, dev)
        if dev.channels_last:  # the same memory format as ours, so the ratio measures loop overhead only
            self.model.to(memory_format=torch.channels_last)
        self.opt = sgd(self.model)
        self.rng = np.random.default_rng(0)

    def __call__(self) -> None:
        model, dev = self.model, self.dev
        model.train()
        order = torch.from_numpy(self.rng.permutation(len(self.labels)))
        for s in range(0, len(order), BATCH):
            idx = order[s: s + BATCH]
            x = to_input(self.images[idx], self.info, dev.device, dev.channels_last)
            y = self.labels[idx].to(dev.device)
            with dev.autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class PNGFileDataset(torch.utils.data.Dataset):
    """The reference pattern (OLTR ``LT_Dataset.__getitem__``): open one image file per item,
    decode it with PIL, convert, then ToTensor + Normalize."""

    def __init__(self, paths: list[str], labels: list[int], mean: float, std: float) -> None:
        from torchvision import transforms

        self.paths, self.labels = paths, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            sample = Image.open(f).convert("L")
        return self.transform(sample), self.labels[i]


def write_pngs(images: torch.Tensor, folder: Path) -> list[str]:
    """One PNG file per image (uint8 (N, 1, H, W)), as a folder of training images on disk."""
    from PIL import Image

    paths = []
    for i, img in enumerate(images[:, 0].numpy()):  # (N, 28, 28) uint8
        path = folder / f"{i:06d}.png"
        Image.fromarray(img, mode="L").save(path, format="PNG")
        paths.append(str(path))
    return paths


class PILLoader:
    """One epoch through a reference-style DataLoader (shuffle, workers restarted every epoch),
    with the reference code's default contiguous (NCHW) model and batches."""

    def __init__(self, paths: list[str], train: SplitData, info: DatasetInfo, dev: DeviceSetup, workers: int) -> None:
        self.dev = dev
        _, self.model = new_model(info, dev)
        self.opt = sgd(self.model)
        ds = PNGFileDataset(paths, train.labels.tolist(), info.mean, info.std)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0),
            pin_memory=dev.device.type == "cuda")

    def __call__(self) -> None:
        model, dev = self.model, self.dev
        model.train()
        for x, y in self.loader:
            x, y = x.to(dev.device, non_blocking=True), y.to(dev.device, non_blocking=True)
            with dev.autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def timed(fn, dev: DeviceSetup) -> float:
    """Wall seconds of one epoch: the epoch time ``fn`` reports (ours), else of the whole call."""
    sync(dev)
    t0 = time.perf_counter()
    own = fn()
    sync(dev)
    return own if own is not None else time.perf_counter() - t0


def plain_backbone() -> str:
    """The backbone config.yaml's ``plain`` run trains (what the workflow's epochs cost)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    return config["runs"]["plain"]["params"].get("backbone", HP["backbone"])


def epoch_extras(train: SplitData, val: SplitData, info: DatasetInfo, dev: DeviceSetup,
                 tmp: Path) -> tuple[float, float]:
    """Seconds of the two per-epoch extras ours has and the others lack: the val pass and the
    checkpoint write (a fresh model's state, as fit saves it)."""
    from longtail.io import torch_save
    from longtail.trainer import accuracy

    method, model = new_model(info, dev)
    opt = sgd(model)
    t0 = time.perf_counter()
    accuracy(method, model, val, info, dev, method.cfg.eval_batch_size)
    t_val = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 0}, tmp / "ckpt.pt")
    return t_val, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed epochs per variant (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: the train rule's threads on a CPU host; 2 on a GPU host)")
    ap.add_argument("--backbone", default=None, help="default: the backbone of config.yaml's plain run")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    HP["backbone"] = args.backbone or plain_backbone()

    dev = select_device(args.device, args.threads)
    train, val, info = curated_splits()
    n = len(train)
    print(f"trainer throughput: {HP['backbone']}, batch {BATCH}, {n} curated Fashion-MNIST-LT training images, "
          f"{args.rounds} timed epochs each after 1 warm-up, interleaved")
    print(f"device {dev.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "png").mkdir()
        t_enc = time.perf_counter()
        paths = write_pngs(train.images, Path(tmp) / "png")
        t_enc = time.perf_counter() - t_enc
        t_val, t_ckpt = min(epoch_extras(train, val, info, dev, Path(tmp)) for _ in range(3))
        variants = {
            "ours (longtail.trainer.fit)": Ours(train, val, info, dev, Path(tmp), t_ckpt),
            "bare PyTorch loop": Bare(train, info, dev),
            "PIL DataLoader, 0 workers": PILLoader(paths, train, info, dev, 0),
            "PIL DataLoader, 2 workers": PILLoader(paths, train, info, dev, 2),
        }
        for fn in variants.values():  # warm-up epoch of each
            fn()
        # Rounds interleave the variants so that load from other processes hits them alike.
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, fn in variants.items():
                times[k].append(timed(fn, dev))
    # Best of the rounds (as timeit does): other processes on a shared machine only ever add time.
    best = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    ips = {k: n / v for k, v in best.items()}
    width = max(map(len, best))
    print(f"\n{'variant':<{width}}  {'images/s':>9}  {'s/epoch':>8}  {'median s/epoch':>14}   (best of {args.rounds})")
    for k in best:
        print(f"{k:<{width}}  {ips[k]:9.0f}  {best[k]:8.3f}  {med[k]:14.3f}")
    ours = ips["ours (longtail.trainer.fit)"]
    for other, label in (("bare PyTorch loop", "bare"), ("PIL DataLoader, 0 workers", "PIL 0 workers"),
                         ("PIL DataLoader, 2 workers", "PIL 2 workers")):
        med_ratio = med[other] / med["ours (longtail.trainer.fit)"]
        print(f"ratio ours / {label:<14} {ours / ips[other]:.2f}   (medians: {med_ratio:.2f})")
    restart = variants["ours (longtail.trainer.fit)"].restart
    print(f"(ours: fit's per-epoch time; the benchmark's restart per call, which a real run pays once, "
          f"took another {min(restart):.3f} s (median {float(np.median(restart)):.3f} s))")
    print(f"(ours includes per epoch a val pass over {len(val)} images, {t_val:.3f} s, and a checkpoint "
          f"write, {t_ckpt:.3f} s; writing the {n} PNG files beforehand took {t_enc:.2f} s)")


if __name__ == "__main__":
    main()
