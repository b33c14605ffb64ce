"""The one training loop every trained method shares; it owns the optimisation step.

Per batch: the scheduled lr times each SGD param group's ``lr_scale``, the method's
``training_loss`` under autocast, zero_grad / (scaled) backward, the gradient-norm clip
(``grad_clip`` > 0), the optimiser and GradScaler steps, then the method's ``after_step``.
Methods change the step only through those two hooks (:class:`longtail.methods.base.Method`).

Checkpoints after every epoch to ``checkpoint.pt`` (not a Snakemake output, so it survives a
killed job) and resumes from it when the run fingerprint matches (method, config, seed, parent,
the exact training samples and the source's files: :func:`longtail.pipeline.train`); a checkpoint
of anything else is ignored, an unreadable one set aside (:func:`load_checkpoint`).
Each epoch's batch order, augmentation draws and torch RNG are seeded from (seed, epoch), and the
checkpoint holds the method's own optimiser state (a bilevel method's meta optimiser), so a
resumed run on CPU produces the same weights as an uninterrupted one.

``select: best_val`` keeps a copy of the weights (buffers included: OLTR's centroids, MFM's
modulator) of the epoch with the highest val accuracy, in memory and in the checkpoint, and
loads them into the model at the end; ``last`` keeps the last epoch's. The history's
``selected`` column marks the chosen epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .contracts import HISTORY_COLUMNS
from .data import Augment, DatasetInfo, FeatureSet, SplitData
from .device import DeviceSetup
from .io import torch_save



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


@dataclass
class TrainBatch:
    """One training step as the method's hooks see it.

    ``idx``: positions of the batch's samples in the training split; ``index``: the batch's
    number within the epoch (0-based); ``lr``: the scheduled lr before any group's ``lr_scale``;
    ``saved``: what ``training_loss`` keeps for ``after_step`` (empty at the start of a step).
    """

    x: torch.Tensor
    y: torch.Tensor
    idx: np.ndarray
    epoch: int
    index: int
    lr: float
    loss_fn: nn.Module
    saved: dict[str, Any] = field(default_factory=dict)


def make_optimizer(method: Any, model: nn.Module) -> torch.optim.SGD:
    """SGD over ``method.trainable_parameters(model)``: a list of parameters (one group) or of
    param-group dicts, each with an optional ``lr_scale`` (default 1) applied by :func:`set_lr`."""
    cfg = method.cfg
    optimizer = torch.optim.SGD(method.trainable_parameters(model), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    for g in optimizer.param_groups:
        g.setdefault("lr_scale", 1.0)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr := scheduled ``lr`` * the group's ``lr_scale``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def train_step(method: Any, model: nn.Module, batch: TrainBatch, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, dev: DeviceSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on ``batch`` (lr already set); returns (loss, logits) of the batch."""
    with dev.autocast():
        loss, logits = method.training_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    clip = method.cfg.grad_clip
    if clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradient, not the loss-scaled one
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        method.after_step(model, batch)
    return loss, logits


def cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state (weights and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def mark_selected(history: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """``history`` with its ``selected`` column: true on the row of ``epoch`` (default: the
    last row) when the column is absent or empty (methods that fit without the trainer)."""
    history = history.copy()
    if "selected" in history.columns and history["selected"].notna().any():
        history["selected"] = history["selected"].fillna(False).astype(bool)
        return history
    if epoch is None:
        flags = np.arange(len(history)) == len(history) - 1
    else:
        flags = history["epoch"].to_numpy() == epoch
    history["selected"] = flags.astype(bool)
    return history


def fit(method: Any, model: nn.Module, run: TrainRun) -> pd.DataFrame:
    """Train ``model`` in place with ``method``'s sampler, loss, parameter groups and
    hyper-parameters, one :func:`train_step` per batch; with ``select: best_val`` the model ends
    with the weights of its best val epoch. Returns the per-epoch history (``HISTORY_COLUMNS``;
    ``lr`` is the scheduled lr, before group scales; ``selected`` marks the kept epoch).
    """
    cfg, dev, info = method.cfg, run.device, run.info
    augment = run.train.resolve_augment(getattr(cfg, "augment", "auto"))
    select = getattr(cfg, "select", "last")
    if select == "best_val" and len(run.val) == 0:
        raise ValueError("select best_val needs a val split: set curation.val_per_class > 0 or select: last")
    model.to(dev.device)
    if dev.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = method.create_loss(info).to(dev.device)
    optimizer = make_optimizer(method, model)
    scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)
    sampler = method.create_sampler(run.train.labels.numpy())
    history: list[dict] = []
    start = 0
    best: dict[str, Any] = {"epoch": 0, "val_acc": -math.inf, "model": None}
    ckpt = load_checkpoint(run.checkpoint)
    if ckpt is not None and ckpt.get("fingerprint") != run.fingerprint:
        print(f"ignoring {run.checkpoint}: it was written for another method, config, seed, parent or "
              f"training data (fingerprint {ckpt.get('fingerprint')}, this run {run.fingerprint}); "
              "training from epoch 1", file=sys.stderr)
    elif ckpt is not None:
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        initial_method = method.training_state()
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            method.load_training_state(ckpt["method_state"])
            if select == "best_val":
                best = dict(ckpt["best"])
            history, start = list(ckpt["history"]), int(ckpt["epoch"]) + 1
            print(f"resuming from {run.checkpoint} after epoch {ckpt['epoch']}", file=sys.stderr)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            # loaded but unusable: back to the untouched initial state, as if it had not existed
            set_aside(run.checkpoint, f"{type(exc).__name__}: {exc}")
            model.load_state_dict(initial)
            method.load_training_state(initial_method)
            optimizer = make_optimizer(method, model)
            scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)
            history, start = [], 0
            best = {"epoch": 0, "val_acc": -math.inf, "model": None}
        del initial, initial_method

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
                                   channels_last=dev.channels_last, augment=Augment(augment, (run.seed, epoch)))
        bar = tqdm(stream, total=n_batches, file=sys.stderr, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not run.progress, mininterval=5)
        for b, (idx, x) in enumerate(bar):
            lr = lr_at(cfg, epoch, b / n_batches)
            set_lr(optimizer, lr)
            y = run.train.labels[idx].to(dev.device, non_blocking=True)
            batch = TrainBatch(x, y, idx, epoch, b, lr, loss_fn)
            loss, logits = train_step(method, model, batch, optimizer, scaler, dev)
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
        # strictly higher: the earliest of equally good epochs stays (OLTR's `>` on val accuracy)
        if select == "best_val" and val_acc > best["val_acc"]:
            best = {"epoch": epoch + 1, "val_acc": val_acc, "model": cpu_copy(model)}
        torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "history": history,
                    "method_state": method.training_state(), "best": best,
                    "fingerprint": run.fingerprint, "rng": rng_state()}, run.checkpoint)
    chosen = None
    if select == "best_val" and best["model"] is not None:
        model.load_state_dict(best["model"])
        chosen = best["epoch"]
        print(f"select best_val: keeping epoch {chosen} (val_acc {best['val_acc']:.4f})", file=sys.stderr)
    frame = pd.DataFrame(history, columns=[c for c in HISTORY_COLUMNS if c != "selected"])
    return mark_selected(frame, chosen)[list(HISTORY_COLUMNS)]


def set_aside(path: Path, why: str) -> Path:
    """Rename an unreadable checkpoint to ``<name>.corrupt-<time>`` (kept for inspection) and warn."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    path.replace(aside)
    print(f"WARNING: checkpoint {path} is unreadable ({why.splitlines()[0] if why else 'no detail'}); "
          f"moved it to {aside} and training from epoch 1", file=sys.stderr)
    return aside


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None when there is none. One that cannot be read (truncated,
    garbage, not a checkpoint) is set aside with a warning rather than blocking every rerun."""
    if not path.exists():
        return None
    try:
        # on the CPU: a device out of memory must not pass for a corrupt file (load_state_dict
        # moves the tensors to the model's device)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    except OSError:
        raise  # an unreadable disk or permissions, not a corrupt file: keep it and say so
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything for garbage
        set_aside(path, f"{type(exc).__name__}: {exc}")
        return None
    if not isinstance(ckpt, dict):
        set_aside(path, f"it holds a {type(ckpt).__name__}, not a checkpoint dict")
        return None
    return ckpt


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
