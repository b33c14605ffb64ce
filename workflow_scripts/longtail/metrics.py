"""Metrics computed from prediction tables: closed-set, shot-group and open-set (OLTR).

Predictions are the single source of every reported number; this module turns a predictions
table (``contracts.PREDICTIONS``; ``topk`` optional here) and the class table (label, n_train,
shot_group) into the long-form metrics table (``contracts.METRICS``) the ``evaluate`` rule writes.
All values are fractions in [0, 1] (never percent).

Conventions:
- Group accuracy (many/medium/few) = mean of the per-class accuracies of the classes in that
  group, on closed-set samples only; classes without eval samples are skipped; empty group = NaN.
- Open set (OLTR): a prediction is rejected (-1) when its confidence < threshold; a confidence
  equal to the threshold is kept. The threshold is a fixed number (a paper's) or the val_tpr rule:
  the confidence that keeps ``tpr`` of the known validation samples (:func:`resolve_threshold`).
  F-measure is OLTR's ``utils.F_measure`` as their code computes it now (:func:`f_measure`) and
  as it did before their fix of 29 Jan 2020 (:func:`f_measure_oltr2019`), which their README says
  produced the paper's numbers; because both are disputed, macro-F1 over C+1 classes is reported too.
- Detection (threshold-free, scored by the max softmax): the KNOWN set is the positive class for
  AUROC, AUPR-in and FPR at 95 % TPR; AUPR-out takes the open set as positive (scored by
  -confidence). OpenOOD v1.5 takes the open set as positive: its AUROC equals ours (symmetric in
  that choice), its FPR@95 does not (docs/architecture.md, open-set conventions).
- Calibration: expected calibration error with 15 equal-width confidence bins (Guo et al. 2017,
  eq. 3), on the closed test split, overall and per shot group (true class's group).
- Near / far open set: ``open`` holds held-out classes of the same source (near), ``open_far``
  samples of another source (far); each gets its own setting (``open``, ``open_far``).
- Collapse: :func:`collapse_reason` flags a run whose numbers must not be read as a result.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

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
F_MEASURE_2019 = "f_measure_oltr2019"  # OLTR's F-measure before their 2020 fix (the paper's numbers)
AUPR_IN = "aupr_in"                 # average precision, known positive, scored by confidence
AUPR_OUT = "aupr_out"               # average precision, open positive, scored by -confidence
FPR95 = "fpr_at_95_tpr"             # share of open samples kept at the threshold keeping 95 % of known
THRESHOLD = "threshold"             # the rejection threshold used (fixed or from the val_tpr rule)
ECE = "ece"                         # expected calibration error, 15 equal-width bins, closed test
COLLAPSED = "collapsed"             # 1 when collapse_reason found a reason, else 0
ECE_BINS = 15
# open-set settings: near = held-out classes of the same source, far = another source
OPEN_SETTINGS = {"open": "open", "open_far": "open_far"}  # split -> setting
COLLAPSE_TOLERANCE = 0.01           # val accuracy <= 1/C + this counts as chance


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
    """OLTR's open-set F-measure as their ``utils.F_measure`` computes it since 29 Jan 2020
    (0 when undefined; their code adds 1e-12 to P + R, which changes nothing else).

    TP: known sample predicted correctly; FP: known sample predicted wrongly, rejections
    included; FN: open sample (label -1) predicted as any known class. F = 2PR / (P + R).
    """
    return _oltr_f(labels, preds_open, rejections_are_fp=True)


def f_measure_oltr2019(labels: Iterable[int], preds_open: Iterable[int]) -> float:
    """OLTR's open-set F-measure as their code computed it from April 2019 until the fix of
    29 Jan 2020 (their README: the paper's F-measures came from it and "might be a little bit
    higher than actual"): FP counts only known samples predicted as a WRONG KNOWN class; a
    rejected known sample is neither TP nor FP. TP and FN as in :func:`f_measure`."""
    return _oltr_f(labels, preds_open, rejections_are_fp=False)


def _oltr_f(labels: Iterable[int], preds_open: Iterable[int], rejections_are_fp: bool) -> float:
    y, p = np.asarray(labels, np.int64), np.asarray(preds_open, np.int64)
    known = y != UNKNOWN
    tp = int(np.sum(known & (p == y)))
    fp = int(np.sum(known & (p != y) & (rejections_are_fp | (p != UNKNOWN))))
    fn = int(np.sum(~known & (p != UNKNOWN)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def tpr_threshold(known_conf: Iterable[float], tpr: float = 0.95) -> float:
    """The largest threshold t that keeps at least ``tpr`` of the known samples (conf >= t kept):
    the k-th largest confidence, k = ceil(tpr * n). NaN without samples."""
    conf = np.sort(np.asarray(known_conf, float))[::-1]
    if not len(conf):
        return float("nan")
    k = max(math.ceil(tpr * len(conf) - 1e-9), 1)  # (- 1e-9: 0.95 * 20 is 19.000000000000004)
    return float(conf[k - 1])


def fpr_at_tpr(known_conf: Iterable[float], open_conf: Iterable[float], tpr: float = 0.95) -> float:
    """Share of open samples kept (conf >= t) at the threshold t that keeps ``tpr`` of the known
    ones (:func:`tpr_threshold`), known = positive: the first point of the ROC curve whose TPR
    reaches ``tpr``. NaN unless both sets are present."""
    open_conf = np.asarray(open_conf, float)
    t = tpr_threshold(known_conf, tpr)
    return float(np.mean(open_conf >= t)) if len(open_conf) and not math.isnan(t) else float("nan")


def resolve_threshold(spec: float | Mapping, predictions: pd.DataFrame) -> float:
    """The rejection threshold of one run: ``spec`` itself when a number (a paper's fixed value),
    else the rule ``{rule: val_tpr, tpr: q}``: the confidence that keeps q of the known validation
    samples (:func:`tpr_threshold` on the 'val' predictions)."""
    if not isinstance(spec, Mapping):
        return float(spec)
    rule = spec.get("rule")
    if rule != "val_tpr":
        raise ValueError(f"open_threshold: unknown rule {rule!r}; use a number or {{rule: val_tpr, tpr: 0.95}}")
    val = predictions[(predictions["split"] == "val") & (predictions["label"] >= 0)]
    if val.empty:
        raise ValueError("open_threshold: the val_tpr rule needs val predictions, but this dataset has no val split "
                         "(val_per_class: 0); give open_threshold a number")
    return tpr_threshold(val["confidence"].to_numpy(float), float(spec.get("tpr", 0.95)))


def expected_calibration_error(confidence: Iterable[float], correct: Iterable[bool], bins: int = ECE_BINS) -> float:
    """ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)| over ``bins`` equal-width bins
    B_b = ((b-1)/M, b/M] of the confidence (Guo et al. 2017, eq. 3; a confidence of 0 joins the
    first bin). NaN without samples."""
    conf = np.asarray(confidence, float)
    hit = np.asarray(correct, bool).astype(float)
    if not len(conf):
        return float("nan")
    # bin b holds edges[b-1] < conf <= edges[b]; edges k/M correctly rounded, so 0.8 = 12/15 is an edge
    b = np.clip(np.searchsorted(np.arange(1, bins + 1) / bins, conf, side="left"), 0, bins - 1)
    n = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, hit, bins) - np.bincount(b, conf, bins))  # |sum(hit) - sum(conf)| per bin
    return float(gap.sum() / n.sum())


def calibration_metrics(test_df: pd.DataFrame, class_counts: pd.DataFrame) -> dict[tuple[str, str], float]:
    """ECE on the known test samples, overall and per shot group of the sample's true class:
    {(group, 'ece'): value}."""
    known = test_df[test_df["label"] >= 0]
    groups = class_counts.set_index("label")["shot_group"].reindex(known["label"].to_numpy()).to_numpy()
    conf, hit = known["confidence"].to_numpy(float), (known["label"] == known["pred"]).to_numpy()
    out = {("overall", ECE): expected_calibration_error(conf, hit)}
    for g in GROUPS:
        out[(g, ECE)] = expected_calibration_error(conf[groups == g], hit[groups == g])
    return out


def collapse_reason(predictions: pd.DataFrame, num_classes: int, history: pd.DataFrame | None = None,
                    tolerance: float = COLLAPSE_TOLERANCE) -> str | None:
    """One line saying why a run collapsed, or None. Collapsed: validation accuracy at or below
    chance (1/C + ``tolerance``), one predicted class for every val or test sample (C > 1), or a
    non-finite training loss in the history (rows with a finite lr: training-free methods write
    NaN loss and NaN lr)."""
    known = predictions[predictions["label"] >= 0]
    val = known[known["split"] == "val"]
    if len(val) and num_classes > 1:
        acc = float(np.mean(val["label"].to_numpy() == val["pred"].to_numpy()))
        if acc <= 1.0 / num_classes + tolerance:
            return (f"validation accuracy {acc:.4f} is at chance (1/{num_classes} = {1 / num_classes:.4f}, "
                    f"tolerance {tolerance})")
    for split in ("val", "test"):
        preds = known.loc[known["split"] == split, "pred"].unique()
        if num_classes > 1 and len(preds) == 1:
            return f"every {split} sample is predicted as class {int(preds[0])}"
    diverged = training_divergence(history) if history is not None else None
    if diverged is not None:
        return f"training loss is {diverged[1]} at epoch {diverged[0]}"
    return None


def training_divergence(history: pd.DataFrame) -> tuple[int, float] | None:
    """(epoch, loss) of the first epoch that trained (finite lr) with a non-finite loss, or None.
    Training-free methods write NaN loss and NaN lr; a history without a loss column (a sweep,
    tau-normalisation's) trained nothing either."""
    if "loss" not in history.columns or not len(history):
        return None
    loss = history["loss"].to_numpy(float)
    lr = history["lr"].to_numpy(float) if "lr" in history.columns else np.ones_like(loss)
    bad = ~np.isfinite(loss) & np.isfinite(lr)
    if not bad.any():
        return None
    epoch = history["epoch"].to_numpy()[bad][0] if "epoch" in history.columns else int(np.argmax(bad))
    return int(epoch), float(loss[bad][0])


def detection_metrics(known_conf: np.ndarray, open_conf: np.ndarray) -> dict[str, float]:
    """Threshold-free known-vs-open detection by max softmax: auroc and aupr_in (known positive,
    scored by confidence), aupr_out (open positive, scored by -confidence), fpr_at_95_tpr (known
    positive). NaN unless both sets are present."""
    if not (len(known_conf) and len(open_conf)):
        return {AUROC: float("nan"), AUPR_IN: float("nan"), AUPR_OUT: float("nan"), FPR95: float("nan")}
    sk = _sk_metrics()
    is_known = np.concatenate([np.ones(len(known_conf), bool), np.zeros(len(open_conf), bool)])
    conf = np.concatenate([known_conf, open_conf])
    return {
        AUROC: float(sk.roc_auc_score(is_known, conf)),
        AUPR_IN: float(sk.average_precision_score(is_known, conf)),
        AUPR_OUT: float(sk.average_precision_score(~is_known, -conf)),
        FPR95: fpr_at_tpr(known_conf, open_conf, 0.95),
    }


def open_set_metrics(test_df: pd.DataFrame, open_df: pd.DataFrame, class_counts: pd.DataFrame,
                     threshold: float) -> dict[str, float]:
    """Open-set metrics after rejection at ``threshold``.

    Keys: top1 / mean_class_acc / many / medium / few on the known test samples (a rejected
    known sample is wrong), f_measure and f_measure_oltr2019 on test + open, open_reject_rate,
    macro_f1 over the known labels plus unknown (-1), the threshold itself, and the detection
    metrics of :func:`detection_metrics` (the known set is the positive class of auroc, aupr_in
    and fpr_at_95_tpr; NaN unless both sets are present).
    """
    known = test_df[test_df["label"] >= 0]
    opened = open_df.assign(label=UNKNOWN)  # open rows are unknown whatever they were stored as
    known_open = known.assign(pred=open_set_predictions(known, threshold))
    open_preds = open_set_predictions(opened, threshold)
    closed = closed_set_metrics(known_open, class_counts)
    y_all = np.concatenate([known["label"].to_numpy(np.int64), opened["label"].to_numpy(np.int64)])
    p_all = np.concatenate([known_open["pred"].to_numpy(np.int64), open_preds])
    return {
        TOP1: closed[TOP1],
        MEAN_CLASS_ACC: closed[MEAN_CLASS_ACC],
        **{g: closed[g] for g in GROUPS},
        F_MEASURE: f_measure(y_all, p_all),
        F_MEASURE_2019: f_measure_oltr2019(y_all, p_all),
        OPEN_REJECT_RATE: float(np.mean(open_preds == UNKNOWN)) if len(open_preds)
        else float("nan"),
        **detection_metrics(known["confidence"].to_numpy(float), opened["confidence"].to_numpy(float)),
        MACRO_F1: float(_sk_metrics().f1_score(y_all, p_all, labels=np.unique(y_all), average="macro",
                                 zero_division=0)) if len(y_all) else float("nan"),
        THRESHOLD: float(threshold),
    }


def _rows(split: str, setting: str, metrics: Mapping) -> list[tuple]:
    """(split, setting, group, metric, value): group names become group rows of metric top1;
    (group, metric) keys name both."""
    rows = []
    for key, value in metrics.items():
        if isinstance(key, tuple):
            rows.append((split, setting, *key, value))
        elif key in GROUPS:
            rows.append((split, setting, key, TOP1, value))
        elif key == OPEN_REJECT_RATE:
            rows.append((split, setting, "open", key, value))
        else:
            rows.append((split, setting, "overall", key, value))
    return rows


def evaluate(predictions: pd.DataFrame, class_counts: pd.DataFrame, *, dataset: str, method: str,
             seed: int, threshold: float | Mapping = 0.1, eval_split: str = "test",
             collapsed: str | None = None) -> pd.DataFrame:
    """Long-form metrics table (columns METRICS_COLUMNS) for one run.

    Closed rows for ``eval_split`` (with ECE overall and per group, and ``collapsed`` 1/0 from
    the reason given, see :func:`collapse_reason`); closed rows for 'val' too when present (for
    tuning); open rows for ``eval_split`` in setting 'open' (near) and 'open_far' (far) when the
    predictions contain those splits, rejecting at ``threshold`` (a number or a rule, see
    :func:`resolve_threshold`); closed rows for each imbalanced test split present (MFM appendix
    C.1 Test-1/Test-2: their overall top1/error are sample-weighted, so they follow the split's
    skewed class frequencies).
    """
    by_split = {s: d for s, d in predictions.groupby("split", sort=False)}
    if eval_split not in by_split:
        raise ValueError(f"predictions have no {eval_split!r} split (have {sorted(by_split)})")
    rows = _rows(eval_split, "closed", {**closed_set_metrics(by_split[eval_split], class_counts),
                                        **calibration_metrics(by_split[eval_split], class_counts),
                                        COLLAPSED: float(collapsed is not None)})
    if "val" in by_split and eval_split != "val":
        rows += _rows("val", "closed", closed_set_metrics(by_split["val"], class_counts))
    opens = [s for s in OPEN_SETTINGS if s in by_split]
    t = resolve_threshold(threshold, predictions) if opens else float("nan")
    for split in opens:
        rows += _rows(eval_split, OPEN_SETTINGS[split], open_set_metrics(
            by_split[eval_split], by_split[split], class_counts, t))
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
