"""Stage functions called by the workflow scripts: train one run, infer logits/embeddings.

They take and return in-memory objects (DataFrames, dicts, tensors); scripts do the file I/O and
turn their results into the tables of :mod:`longtail.contracts`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .contracts import TRAINING_SPLITS, FeatureSet
from .data import DatasetInfo, SplitData, dataset_info, load_split
from .device import DeviceSetup
from .methods import create_method
from .methods.base import Method
from .sources import SourceData
from .trainer import TrainRun, fingerprint, mark_selected, rng_state

SAMPLE_KEY = ("sample_id", "source", "source_index", "split", "label")


def samples_fingerprint(samples: pd.DataFrame, splits: tuple[str, ...] = TRAINING_SPLITS) -> str:
    """SHA-256 of the ``splits`` rows of a samples table in table order (the order training
    reads them in): each row's sample id, source split and index, split and label."""
    rows = samples.loc[samples["split"].isin(splits), list(SAMPLE_KEY)]
    return hashlib.sha256(rows.to_csv(index=False, lineterminator="\n").encode()).hexdigest()


def source_fingerprint(source: SourceData) -> str:
    """The source's identity: its name and provenance (root, data-selecting options, the files
    read and their checksums, or a listing's checksum)."""
    return fingerprint({"name": source.name, "image_size": source.image_size,
                        "provenance": dict(source.provenance)})


def train(method_name: str, params: Mapping, samples: pd.DataFrame, source: SourceData, *, seed: int,
          device: DeviceSetup, checkpoint: Path, parent: Mapping | None = None,
          parent_features: FeatureSet | None = None, progress: bool = True,
          workers: int = 0) -> tuple[dict, pd.DataFrame]:
    """Train one run; return (the model.pt dict, history). Resumes from ``checkpoint``.

    ``parent``/``parent_features``: the model.pt dict and cached embeddings of the run named by
    ``init_from`` (classifier-stage and two-stage methods)."""
    method = create_method(method_name, params)
    if method.requires_parent and parent is None:
        raise ValueError(f"method '{method_name}' starts from another run: set init_from in its config")
    splits = {s: load_split(source, samples, s, workers) for s in ("train", "val")}
    if hasattr(method.cfg, "augment"):  # recorded resolved: config.yaml and model.pt say what ran
        augment = splits["train"].resolve_augment(method.cfg.augment) if method.trains_on_images else "none"
        method.cfg = dataclasses.replace(method.cfg, augment=augment)
    info = dataset_info(samples, source)
    torch.manual_seed(seed)
    model = method.build_model(info)
    method.init_model(model, parent)
    meta = load_split(source, samples, "meta", workers) if (samples["split"] == "meta").any() else None
    # decides resume only: a checkpoint of another config, seed, parent, sample set or source
    # (e.g. after a curation change) is never continued
    fp = fingerprint({"method": method_name, "config": method.cfg.to_dict(), "seed": seed,
                      "info": info.to_dict(), "samples": samples_fingerprint(samples),
                      "source": source_fingerprint(source),
                      "parent": parent.get("fingerprint") if parent else None})
    run = TrainRun(splits["train"], splits["val"], info, device, seed, checkpoint, fp, meta, progress,
                   parent_features=parent_features)
    t0 = time.perf_counter()
    history = mark_selected(method.fit(model, run))
    # a sweep history (tau-normalisation) selects a tau, not an epoch
    selected = history.loc[history["selected"], "epoch"] if "epoch" in history else history.iloc[:0]
    model.to("cpu")
    ckpt = {
        "model": model.state_dict(),
        "optimizer": None,  # the final optimizer state lives in checkpoint.pt while training
        "scheduler": {"schedule": getattr(method.cfg, "schedule", None), "epochs": getattr(method.cfg, "epochs", 0)},
        "epoch": len(history),
        # the epoch whose weights these are (select: last | best_val); None: no epochs
        "select": getattr(method.cfg, "select", "last"),
        "selected_epoch": int(selected.iloc[0]) if len(selected) else None,
        "rng": rng_state(),
        "method": method_name,
        "config": method.cfg.to_dict(),
        "seed": seed,
        "info": info.to_dict(),
        "fingerprint": fp,
        "train_seconds": time.perf_counter() - t0,
    }
    return ckpt, history


def load_trained(ckpt: Mapping) -> tuple[Method, nn.Module, DatasetInfo]:
    """Rebuild (method, model, info) from a model.pt dict."""
    method = create_method(ckpt["method"], ckpt["config"])
    info = DatasetInfo.from_dict(ckpt["info"])
    model = method.build_model(info)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return method, model, info


@torch.no_grad()
def infer(method: Method, model: nn.Module, split: SplitData, info: DatasetInfo, device: DeviceSetup,
          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C) float32, embeddings (N, D) float32) of a split, batched."""
    model.to(device.device).eval()
    if device.channels_last:
        model.to(memory_format=torch.channels_last)
    logits, feats = [], []
    for _, x in split.iterate(batch_size, info, device.device, channels_last=device.channels_last):
        with device.autocast():
            lg, f = method.infer(model, x)
        logits.append(lg.float().cpu())
        feats.append(f.float().cpu())
    if not logits:
        return np.zeros((0, info.num_classes), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()
