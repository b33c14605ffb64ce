"""Training throughput (images/s) of our trainer against a bare PyTorch loop and against the
per-sample PIL-decoding DataLoader that reference long-tail implementations use.

Same model (LeNet), batch size (128), optimiser (SGD, momentum 0.9) and images (the curated
Fashion-MNIST-LT train split of config.yaml) for every variant, all in one run:

1. ours      ``longtail.trainer.fit`` with ``plain`` (sampler, checkpoint and val pass each epoch)
2. bare      a hand-written loop over the same in-memory uint8 tensor (the floor of overhead)
3. PIL/wN    a torch DataLoader over a Dataset that decodes one PNG per item with PIL and applies
             torchvision ToTensor + Normalize, as the reference repos do, with N workers

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_throughput.py [--rounds 3] [--threads 2]
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
HP = {"backbone": "lenet", "batch_size": BATCH, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
      "schedule": "constant"}


def curated_splits(dataset: str = "fmnist_lt") -> tuple[SplitData, SplitData, DatasetInfo]:
    """Train and val splits of a dataset of config.yaml, curated exactly as the workflow does."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ds = config["datasets"][dataset]
    cur = dict(ds["curation"])
    seed = cur.pop("seed", 0)
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
    """One epoch of longtail.trainer.fit per call (a fresh 1-epoch run: sampler, val pass and
    checkpoint write included, as every epoch of a real run has them)."""

    def __init__(self, train: SplitData, val: SplitData, info: DatasetInfo, dev: DeviceSetup, tmp: Path) -> None:
        self.train, self.val, self.info, self.dev, self.tmp = train, val, info, dev, tmp
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        method = create_method("plain", {**HP, "epochs": 1})
        torch.manual_seed(0)
        model = method.build_model(self.info)
        ckpt = self.tmp / f"run{self.calls}.pt"
        run = TrainRun(self.train, self.val, self.info, self.dev, 0, ckpt, str(self.calls), progress=False)
        with contextlib.redirect_stderr(io.StringIO()):  # its per-epoch log line
            fit(method, model, run)
        ckpt.unlink(missing_ok=True)


class Bare:
    """One epoch of a hand-written loop over the in-memory uint8 tensor."""

    def __init__(self, train: SplitData, info: DatasetInfo, dev: DeviceSetup) -> None:
        self.images, self.labels, self.info, self.dev = train.images, train.labels, info, dev
        _, self.model = new_model(info, dev)
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


class PNGDataset(torch.utils.data.Dataset):
    """One PNG (bytes in memory) decoded with PIL per item, then ToTensor + Normalize."""

    def __init__(self, pngs: list[bytes], labels: list[int], mean: float, std: float) -> None:
        from torchvision import transforms

        self.pngs, self.labels = pngs, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.pngs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(io.BytesIO(self.pngs[i])) as im:
            return self.transform(im.convert("L")), self.labels[i]


def encode_pngs(images: torch.Tensor) -> list[bytes]:
    from PIL import Image

    out = []
    for img in images[:, 0].numpy():  # (N, 28, 28) uint8
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


class PILLoader:
    """One epoch through a reference-style DataLoader (shuffle, workers restarted every epoch)."""

    def __init__(self, pngs: list[bytes], train: SplitData, info: DatasetInfo, dev: DeviceSetup, workers: int) -> None:
        self.dev = dev
        _, self.model = new_model(info, dev)
        self.opt = sgd(self.model)
        ds = PNGDataset(pngs, train.labels.tolist(), info.mean, info.std)
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
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per variant (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the train rule's threads)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()

    dev = select_device(args.device, args.threads)
    train, val, info = curated_splits()
    n = len(train)
    print(f"trainer throughput: LeNet, batch {BATCH}, {n} curated Fashion-MNIST-LT training images, "
          f"{args.rounds} timed epochs each after 1 warm-up, interleaved")
    print(f"device {dev.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    t_enc = time.perf_counter()
    pngs = encode_pngs(train.images)
    t_enc = time.perf_counter() - t_enc
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "ours (longtail.trainer.fit)": Ours(train, val, info, dev, Path(tmp)),
            "bare PyTorch loop": Bare(train, info, dev),
            "PIL DataLoader, 0 workers": PILLoader(pngs, train, info, dev, 0),
            "PIL DataLoader, 2 workers": PILLoader(pngs, train, info, dev, 2),
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
        print(f"ratio ours / {label:<14} {ours / ips[other]:.2f}   (medians: {med[other] / med['ours (longtail.trainer.fit)']:.2f})")
    print(f"(ours includes a val pass over {len(val)} images and a checkpoint write per epoch; "
          f"PNG encoding of the train set, done once beforehand: {t_enc:.2f} s)")


if __name__ == "__main__":
    main()
