"""The one training loop every trained method shares.

Checkpoints after every epoch to ``checkpoint.pt`` (not a Snakemake output, so it survives a
killed job) and resumes from it when the run fingerprint (method, config, seed, data) matches.
Each epoch's batch order and torch RNG are seeded from (seed, epoch), so a resumed run on CPU
produces the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .data import DatasetInfo, FeatureSet, SplitData
from .device import DeviceSetup
from .io import torch_save

HISTORY_COLUMNS = ("epoch", "loss", "train_acc", "val_acc", "lr", "seconds")


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


def fingerprint(obj: Mapping) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lr_at(cfg: Any, epoch: int, step: float = 0.0) -> float:
    """Learning rate at fractional epoch ``epoch + step`` (linear warm-up, then the schedule)."""
    t = epoch + step
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        # LDAM-DRW's warm-up: lr * e / W in (1-based) epoch e <= W, constant within an epoch, so it
        # reaches lr in the last warm-up epoch and never exceeds it
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t / max(cfg.epochs, 1)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return cfg.lr
    raise ValueError(f"unknown lr schedule '{cfg.schedule}'; choose cosine, step or constant")


@torch.no_grad()
def accuracy(method: Any, model: nn.Module, split: SplitData, info: DatasetInfo, dev: DeviceSetup,
             batch_size: int) -> float:
    if len(split) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for idx, x in split.iterate(batch_size, info, dev.device, channels_last=dev.channels_last):
        with dev.autocast():
            logits, _ = method.infer(model, x)
        correct += int((logits.argmax(1).cpu() == split.labels[idx]).sum())
    return correct / len(split)


@dataclass
class TrainRun:
    """Everything one training job needs besides the method and model."""

    train: SplitData
    val: SplitData
    info: DatasetInfo
    device: DeviceSetup
    seed: int
    checkpoint: Path
    fingerprint: str
    meta: SplitData | None = None
    progress: bool = True
    parent_features: FeatureSet | None = None  # embeddings of the init_from run, by split


def fit(method: Any, model: nn.Module, run: TrainRun,
        step_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None) -> pd.DataFrame:
    """Train ``model`` in place with ``method``'s sampler, loss and hyper-parameters.

    ``step_fn(model, x, y, epoch, loss_fn, optimizer, scaler, batch_idx)`` may replace the default
    forward/backward/step (bilevel methods); it returns (loss, logits) after stepping. A step_fn
    with a parameter ``idx`` also receives the batch's training-sample positions (np.ndarray).
    Returns the per-epoch history (``HISTORY_COLUMNS``).
    """
    cfg, dev, info = method.cfg, run.device, run.info
    model.to(dev.device)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = method.create_loss(info).to(dev.device)
    params = method.trainable_parameters(model)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)
    sampler = method.create_sampler(run.train.labels.numpy())
    wants_idx = step_fn is not None and "idx" in inspect.signature(step_fn).parameters
    history: list[dict] = []
    start = 0
    if run.checkpoint.exists():
        ckpt = torch.load(run.checkpoint, map_location=dev.device, weights_only=False)
        if ckpt.get("fingerprint") == run.fingerprint:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            history = list(ckpt["history"])
            start = ckpt["epoch"] + 1
            print(f"resuming from {run.checkpoint} after epoch {ckpt['epoch']}", file=sys.stderr)
        else:
            print(f"ignoring {run.checkpoint}: it belongs to another config", file=sys.stderr)

    torch.manual_seed(run.seed)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(run.seed * 100003 + epoch)  # dropout / augmentation RNG per epoch
        order = sampler.indices(epoch, np.random.default_rng([run.seed, epoch]))
        n_batches = -(-len(order) // cfg.batch_size)
        model.train()
        # running sums stay on the device: reading them each batch (float(), int()) would make the
        # host wait for a GPU every step, so it reads them every `check_every` batches (each batch
        # on CPU, where that costs nothing) to stop a diverged run early
        tot_loss = torch.zeros((), dtype=torch.float32, device=dev.device)
        tot_correct = torch.zeros((), dtype=torch.long, device=dev.device)
        tot_n = 0
        check_every = 1 if dev.device.type == "cpu" else 25
        stream = run.train.iterate(cfg.batch_size, info, dev.device, order=order, train=True,
                                   channels_last=dev.channels_last)
        bar = tqdm(stream, total=n_batches, file=sys.stderr, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not run.progress, mininterval=5)
        for b, (idx, x) in enumerate(bar):
            lr = lr_at(cfg, epoch, b / n_batches)
            for g in optimizer.param_groups:
                g["lr"] = lr
            y = run.train.labels[idx].to(dev.device, non_blocking=True)
            if step_fn is not None:
                extra = {"idx": idx} if wants_idx else {}
                loss, logits = step_fn(model, x, y, epoch, loss_fn, optimizer, scaler, b, **extra)
            else:
                with dev.autocast():
                    loss, logits = method.training_loss(model, x, y, epoch, loss_fn)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            tot_loss += loss.detach().float() * len(idx)
            tot_correct += (logits.detach().argmax(1) == y).sum()
            tot_n += len(idx)
            if (b + 1) % check_every == 0 or b + 1 == n_batches:
                loss_v = float(tot_loss)
                if not math.isfinite(loss_v):
                    run.checkpoint.unlink(missing_ok=True)
                    raise DivergenceError(
                        f"loss became {loss_v} at epoch {epoch + 1}, by batch {b + 1}; lower lr (now {lr:.4g}) "
                        "or check the data"
                    )
        loss_mean, train_acc = float(tot_loss) / tot_n, int(tot_correct) / tot_n
        val_acc = accuracy(method, model, run.val, info, dev, cfg.eval_batch_size)
        history.append({"epoch": epoch + 1, "loss": loss_mean, "train_acc": train_acc,
                        "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}: loss {loss_mean:.4f} train_acc {train_acc:.4f} "
              f"val_acc {val_acc:.4f}", file=sys.stderr)
        torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "history": history,
                    "fingerprint": run.fingerprint, "rng": rng_state()}, run.checkpoint)
    return pd.DataFrame(history, columns=list(HISTORY_COLUMNS))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
