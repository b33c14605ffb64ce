"""Metrics computed from prediction tables: closed-set, shot-group and open-set (OLTR).

Predictions are the single source of every reported number; this module turns a predictions
table (``contracts.PREDICTIONS``; ``topk`` optional here) and the class table (label, n_train,
shot_group) into the long-form metrics table (``contracts.METRICS``) the ``evaluate`` rule writes.
All values are fractions in [0, 1] (never percent).

Conventions:
- Group accuracy (many/medium/few) = mean of the per-class accuracies of the classes in that
  group, on closed-set samples only; classes without eval samples are skipped; empty group = NaN.
- Open set (OLTR): a prediction is rejected (-1) when its confidence < threshold; a confidence
  equal to the threshold is kept. F-measure is OLTR's ``utils.F_measure`` definition; because
  that definition is disputed, macro-F1 over C+1 classes and known-vs-open AUROC are reported too.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from .contracts import IMBALANCED_TEST_SPLITS, METRICS_COLUMNS

UNKNOWN = -1


def _sk_metrics():
    """scikit-learn's metrics, imported on first use (~1 s): code that imports this module only
    for its metric names or the F-measure does not load it."""
    import sklearn.metrics

    return sklearn.metrics

GROUPS = ("many", "medium", "few")

# Metric names of the long-form table.
TOP1 = "top1"                       # sample accuracy (open setting: after rejection)
ERROR = "error"                     # 1 - top1
MEAN_CLASS_ACC = "mean_class_acc"   # mean of per-class accuracies
MACRO_F1 = "macro_f1"               # closed: over known labels; open: over known labels + unknown
TOP5 = "top5"                       # only when predictions carry a ``topk`` column
F_MEASURE = "f_measure"             # OLTR's open-set F-measure
OPEN_REJECT_RATE = "open_reject_rate"  # OLTR's "open-set accuracy": share of open samples rejected
AUROC = "auroc"                     # known (positive) vs open, scored by confidence


def per_class_accuracy(pred_df: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """Per-class n, correct and accuracy (NaN where n == 0) over closed-set rows (label >= 0)."""
    known = pred_df[pred_df["label"] >= 0]
    labels = known["label"].to_numpy(np.int64)
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} out of range for {num_classes} classes")
    hit = labels == known["pred"].to_numpy(np.int64)
    n = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[hit], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, correct / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"label": np.arange(num_classes, dtype=np.int64), "n": n.astype(np.int64),
                         "correct": correct.astype(np.int64), "accuracy": acc.astype(float)})


def _num_classes(class_counts: pd.DataFrame) -> int:
    return int(class_counts["label"].max()) + 1


def _group_accuracies(per_class: pd.DataFrame, class_counts: pd.DataFrame) -> dict[str, float]:
    """Mean of per-class accuracies per shot group; NaN-accuracy classes (no samples) skipped."""
    merged = per_class.merge(class_counts[["label", "shot_group"]], on="label", how="left")
    out = {}
    for g in GROUPS:
        acc = merged.loc[merged["shot_group"] == g, "accuracy"].dropna()
        out[g] = float(acc.mean()) if len(acc) else float("nan")
    return out


def _topk_accuracy(df: pd.DataFrame, k: int) -> float:
    # topk comes back from parquet as numpy arrays; the first k entries are the top-k classes.
    hits = [int(lab) in set(np.asarray(t)[:k].tolist()) for lab, t in zip(df["label"], df["topk"])]
    return float(np.mean(hits)) if hits else float("nan")


def closed_set_metrics(test_df: pd.DataFrame, class_counts: pd.DataFrame) -> dict[str, float]:
    """Closed-set metrics on the known (label >= 0) rows of one split.

    Keys: top1 (sample accuracy), error, mean_class_acc, macro_f1 (over the labels present in
    the split), many/medium/few (group accuracies), and top5 when ``topk`` is present.
    """
    known = test_df[test_df["label"] >= 0]
    y, p = known["label"].to_numpy(np.int64), known["pred"].to_numpy(np.int64)
    per_class = per_class_accuracy(known, _num_classes(class_counts))
    top1 = float(np.mean(y == p)) if len(y) else float("nan")
    out = {
        TOP1: top1,
        ERROR: 1.0 - top1,
        MEAN_CLASS_ACC: float(per_class["accuracy"].mean()),  # skips classes without samples
        # Restrict to labels present in the split: absent classes would add spurious zeros.
        MACRO_F1: float(_sk_metrics().f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0))
        if len(y) else float("nan"),
        **_group_accuracies(per_class, class_counts),
    }
    if "topk" in known.columns:
        out[TOP5] = _topk_accuracy(known, 5)
    return out


def open_set_predictions(df: pd.DataFrame, threshold: float) -> np.ndarray:
    """OLTR rejection: pred, with -1 where confidence < threshold (equality is kept). A row the
    method rejected itself (pred -1, e.g. OpenMax) stays -1 whatever its confidence."""
    return np.where(df["confidence"].to_numpy(float) < threshold, UNKNOWN,
                    df["pred"].to_numpy(np.int64)).astype(np.int64)


def f_measure(labels: Iterable[int], preds_open: Iterable[int]) -> float:
    """OLTR's open-set F-measure over known + open samples (0 when undefined).

    TP: known sample predicted correctly; FP: known sample predicted wrongly, rejections
    included; FN: open sample (label -1) predicted as any known class.
    """
    y, p = np.asarray(labels, np.int64), np.asarray(preds_open, np.int64)
    known = y != UNKNOWN
    tp = int(np.sum(known & (p == y)))
    fp = int(np.sum(known & (p != y)))
    fn = int(np.sum(~known & (p != UNKNOWN)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def open_set_metrics(test_df: pd.DataFrame, open_df: pd.DataFrame, class_counts: pd.DataFrame,
                     threshold: float) -> dict[str, float]:
    """Open-set metrics after rejection at ``threshold``.

    Keys: top1 / mean_class_acc / many / medium / few on the known test samples (a rejected
    known sample is wrong), f_measure on test + open, open_reject_rate, auroc (known vs open by
    confidence; NaN unless both present), macro_f1 over the known labels plus unknown (-1).
    """
    known = test_df[test_df["label"] >= 0]
    opened = open_df.assign(label=UNKNOWN)  # open rows are unknown whatever they were stored as
    known_open = known.assign(pred=open_set_predictions(known, threshold))
    open_preds = open_set_predictions(opened, threshold)
    closed = closed_set_metrics(known_open, class_counts)
    y_all = np.concatenate([known["label"].to_numpy(np.int64), opened["label"].to_numpy(np.int64)])
    p_all = np.concatenate([known_open["pred"].to_numpy(np.int64), open_preds])
    is_known = y_all != UNKNOWN
    conf = np.concatenate([known["confidence"].to_numpy(float),
                           opened["confidence"].to_numpy(float)])
    return {
        TOP1: closed[TOP1],
        MEAN_CLASS_ACC: closed[MEAN_CLASS_ACC],
        **{g: closed[g] for g in GROUPS},
        F_MEASURE: f_measure(y_all, p_all),
        OPEN_REJECT_RATE: float(np.mean(open_preds == UNKNOWN)) if len(open_preds)
        else float("nan"),
        AUROC: float(_sk_metrics().roc_auc_score(is_known, conf)) if 0 < is_known.sum() < len(is_known)
        else float("nan"),
        MACRO_F1: float(_sk_metrics().f1_score(y_all, p_all, labels=np.unique(y_all), average="macro",
                                 zero_division=0)) if len(y_all) else float("nan"),
    }


def _rows(split: str, setting: str, metrics: dict[str, float]) -> list[tuple]:
    """(split, setting, group, metric, value): group names become group rows of metric top1."""
    rows = []
    for key, value in metrics.items():
        if key in GROUPS:
            rows.append((split, setting, key, TOP1, value))
        elif key == OPEN_REJECT_RATE:
            rows.append((split, setting, "open", key, value))
        else:
            rows.append((split, setting, "overall", key, value))
    return rows


def evaluate(predictions: pd.DataFrame, class_counts: pd.DataFrame, *, dataset: str, method: str,
             seed: int, threshold: float = 0.1, eval_split: str = "test") -> pd.DataFrame:
    """Long-form metrics table (columns METRICS_COLUMNS) for one run.

    Closed rows for ``eval_split``; closed rows for 'val' too when present (for tuning); open
    rows for ``eval_split`` when the predictions contain an 'open' split; closed rows for each
    imbalanced test split present (MFM appendix C.1 Test-1/Test-2: their overall top1/error are
    sample-weighted, so they follow the split's skewed class frequencies).
    """
    by_split = {s: d for s, d in predictions.groupby("split", sort=False)}
    if eval_split not in by_split:
        raise ValueError(f"predictions have no {eval_split!r} split (have {sorted(by_split)})")
    rows = _rows(eval_split, "closed", closed_set_metrics(by_split[eval_split], class_counts))
    if "val" in by_split and eval_split != "val":
        rows += _rows("val", "closed", closed_set_metrics(by_split["val"], class_counts))
    if "open" in by_split:
        rows += _rows(eval_split, "open", open_set_metrics(
            by_split[eval_split], by_split["open"], class_counts, threshold))
    for split in (s for s in IMBALANCED_TEST_SPLITS if s in by_split and s != eval_split):
        rows += _rows(split, "closed", closed_set_metrics(by_split[split], class_counts))
    table = pd.DataFrame(rows, columns=["split", "setting", "group", "metric", "value"])
    table.insert(0, "seed", int(seed))
    table.insert(0, "method", method)
    table.insert(0, "dataset", dataset)
    return table.astype({"seed": np.int64, "value": float})[list(METRICS_COLUMNS)]


def threshold_sweep(predictions: pd.DataFrame, class_counts: pd.DataFrame,
                    thresholds: Iterable[float], eval_split: str = "test") -> pd.DataFrame:
    """Open-set metrics per rejection threshold (OLTR Fig. 8b): columns threshold, f_measure,
    open_reject_rate, top1, many, medium, few."""
    test_df = predictions[predictions["split"] == eval_split]
    open_df = predictions[predictions["split"] == "open"]
    if open_df.empty:
        raise ValueError("threshold_sweep needs predictions on the 'open' split")
    keys = (F_MEASURE, OPEN_REJECT_RATE, TOP1, *GROUPS)
    rows = []
    for t in thresholds:
        m = open_set_metrics(test_df, open_df, class_counts, float(t))
        rows.append({"threshold": float(t), **{k: m[k] for k in keys}})
    return pd.DataFrame(rows, columns=["threshold", *keys])
