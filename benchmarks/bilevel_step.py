"""Cost of one bilevel step (MFM Algorithm 1, and MW-Net / L2RW) relative to one plain SGD step
on the same batch and network, each the shared trainer's step with the method's hook. Prints a
table and the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bilevel_step.py [--backbone lenet5] [--batch 64]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from longtail import trainer  # noqa: E402
from longtail.data import DatasetInfo, SplitData, to_input  # noqa: E402
from longtail.device import select_device  # noqa: E402
from longtail.methods import create_method  # noqa: E402
from longtail.trainer import TrainBatch, TrainRun  # noqa: E402

# row -> (method, parameters beyond the shared ones); mfm_phi is config.yaml's run of that name
RUNS = {
    "plain": ("plain", {}),
    "mfm": ("mfm", {}),
    "mfm_phi": ("mfm", {"modulator": "phi", "meta_optimizer": "sgd", "meta_lr": 100.0}),
    "mw_net": ("mw_net", {}),
    "l2rw": ("l2rw", {}),
}


def time_steps(step, n: int, warmup: int = 2) -> float:
    """Median seconds of ``step()`` over ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="lenet5")
    ap.add_argument("--batch", type=int, default=64)  # config.yaml's
    ap.add_argument("--meta-batch", type=int, default=40)  # config.yaml's
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--layers", default="backbone.fc2", help="comma-separated modulated modules (MFM)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    dev = select_device(args.device, torch.get_num_threads())
    c = 10
    info = DatasetInfo(c, args.channels, tuple([args.batch] * c))
    n = args.batch * c
    imgs = torch.randint(0, 256, (n, args.channels, args.size, args.size), dtype=torch.uint8)
    labels = torch.arange(n) % c
    train = SplitData(imgs, labels, np.arange(n).astype(str), "train")
    meta = SplitData(imgs[: args.meta_batch], labels[: args.meta_batch], np.arange(args.meta_batch).astype(str), "meta")
    idx = np.arange(args.batch)
    x = to_input(imgs[idx], info, dev.device, dev.channels_last)
    y = labels[idx].to(dev.device)

    rows = []
    base = None
    for name, (kind, extra) in RUNS.items():
        params = {"backbone": args.backbone, "batch_size": args.batch, "lr": 0.05, **extra}
        if kind != "plain":
            params["meta_batch_size"] = args.meta_batch
        if kind == "mfm":
            params["layers"] = args.layers.split(",")
        method = create_method(kind, params)
        model = method.build_model(info).to(dev.device).train()
        loss_fn = method.create_loss(info).to(dev.device)
        if kind != "plain":
            method.setup(model, TrainRun(train, train, info, dev, 0, Path("/nonexistent"), "", meta, False))
        opt = trainer.make_optimizer(method, model)
        trainer.set_lr(opt, 0.05)
        scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)

        step = functools.partial(trainer.train_step, method, model, TrainBatch(x, y, idx, 0, 0, 0.05, loss_fn),
                                 opt, scaler, dev)
        sec = time_steps(step, args.steps)
        base = sec if name == "plain" else base
        rows.append((name, sec, sec / base))
    print(f"backbone {args.backbone}, batch {args.batch}, meta batch {args.meta_batch}, device {dev.device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'method':10s} {'ms/step':>10s} {'x plain':>8s}")
    for name, sec, ratio in rows:
        print(f"{name:10s} {sec * 1000:10.1f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
