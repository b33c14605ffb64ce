"""Stage functions called by the workflow scripts: train one run, infer predictions/features.

They take and return in-memory objects (DataFrames, dicts, tensors); scripts do the file I/O.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from .data import DatasetInfo, FeatureSet, SplitData, dataset_info, load_split
from .device import DeviceSetup
from .io import feature_matrix  # noqa: F401  (torch-free home; re-exported for old imports)
from .methods import create_method
from .methods.base import Method
from .sources import SourceData
from .trainer import TrainRun, fingerprint, rng_state

PREDICTION_SPLITS = ("val", "test", "open")
# Embeddings of every split, so classifier-stage methods (NCM, cRT, KT, MetaModelNet, OLTR's
# centroids) start from cached features of their parent run instead of touching images again.
FEATURE_SPLITS = ("train", "val", "meta", "test", "open")


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
    info = dataset_info(samples, source)
    torch.manual_seed(seed)
    model = method.build_model(info)
    method.init_model(model, parent)
    splits = {s: load_split(source, samples, s, workers) for s in ("train", "val")}
    meta = load_split(source, samples, "meta", workers) if (samples["split"] == "meta").any() else None
    fp = fingerprint({"method": method_name, "config": method.cfg.to_dict(), "seed": seed,
                      "n": len(samples), "info": info.to_dict(),
                      "parent": parent.get("fingerprint") if parent else None})
    run = TrainRun(splits["train"], splits["val"], info, device, seed, checkpoint, fp, meta, progress,
                   parent_features=parent_features)
    t0 = time.perf_counter()
    history = method.fit(model, run)
    model.to("cpu")
    ckpt = {
        "model": model.state_dict(),
        "optimizer": None,  # the final optimizer state lives in checkpoint.pt while training
        "scheduler": {"schedule": getattr(method.cfg, "schedule", None), "epochs": getattr(method.cfg, "epochs", 0)},
        "epoch": len(history),
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


def predictions_table(split: SplitData, logits: np.ndarray, k: int = 5) -> pd.DataFrame:
    """The predictions contract: sample_id, split, label, pred, confidence, topk, topk_prob."""
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=1)
    k = min(k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    return pd.DataFrame({
        "sample_id": split.sample_ids.astype(str),
        "split": split.split,
        "label": split.labels.numpy().astype(np.int64),
        "pred": top_i[:, 0].numpy().astype(np.int64),
        "confidence": top_p[:, 0].numpy().astype(np.float64),
        "topk": list(top_i.numpy().astype(np.int64)),
        "topk_prob": list(top_p.numpy().astype(np.float32)),
    })


def features_table(split: SplitData, feats: np.ndarray, dtype: str = "float32") -> pa.Table:
    """Features contract: sample_id, split, label, feature (fixed-size list<float32|float16>).

    float16 halves the cache of large datasets (ImageNet-LT: 186k x 2048); readers upcast."""
    flat = pa.array(np.ascontiguousarray(feats, dtype=np.dtype(dtype)).ravel())
    return pa.table({
        "sample_id": pa.array(split.sample_ids.astype(str)),
        "split": pa.array([split.split] * len(split)),
        "label": pa.array(split.labels.numpy().astype(np.int64)),
        "feature": pa.FixedSizeListArray.from_arrays(flat, feats.shape[1] if feats.ndim == 2 else 0),
    })


def read_features(path: str | Path) -> FeatureSet:
    """Cached embeddings by split: {split: (X (N, D) float32, labels (N,), sample_ids (N,))}."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    split = np.asarray(table.column("split").to_pylist())
    x = feature_matrix(table)
    y = table.column("label").to_numpy()
    ids = np.asarray(table.column("sample_id").to_pylist())
    return {s: (x[split == s], y[split == s], ids[split == s]) for s in dict.fromkeys(split)}


