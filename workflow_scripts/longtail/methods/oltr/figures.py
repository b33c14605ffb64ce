"""OLTR's analysis figures (Liu et al., CVPR 2019, Figs. 3 and 8), from saved outputs only.

Pure functions: tables in, DataFrames / matplotlib Figures out; the ``plot_oltr_*`` scripts do
the file I/O. Every number comes from predictions, features or metrics tables written by the
DAG (nothing is retrained or re-inferred here).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ...metrics import F_MEASURE, OPEN_REJECT_RATE, UNKNOWN, f_measure, open_set_predictions, threshold_sweep  # noqa: E402

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
SWEEP_COLUMNS = ("run", "seed", "threshold", "f_measure", "open_reject_rate", "top1", "many", "medium", "few")


# --- Fig. 3: embeddings of a head and a tail class --------------------------------------------
def head_tail_classes(counts: pd.DataFrame, head: int | None = None, tail: int | None = None) -> tuple[int, int]:
    """(head, tail) labels: given ones, else the classes with most / fewest training images."""
    c = counts.sort_values(["n_train", "label"], ascending=[False, True])
    head = int(c["label"].iloc[0]) if head is None else int(head)
    tail = int(c["label"].iloc[-1]) if tail is None else int(tail)
    known = set(counts["label"].astype(int))
    for name, v in (("head_class", head), ("tail_class", tail)):
        if v not in known:
            raise ValueError(f"oltr_figures.{name}: label {v} is not a known class ({sorted(known)})")
    return head, tail


def compactness(x: np.ndarray, labels: np.ndarray, cls: int) -> float:
    """Mean distance of class ``cls``'s points to their centroid over the mean distance between
    the class centroids (scale-free; smaller = more compact). In the original embedding space."""
    classes = [c for c in np.unique(labels) if c >= 0]
    cents = np.stack([x[labels == c].mean(0) for c in classes])
    pts = x[labels == cls]
    spread = float(np.linalg.norm(pts - pts.mean(0), axis=1).mean())
    d = np.linalg.norm(cents[:, None] - cents[None], axis=-1)
    between = float(d[np.triu_indices(len(classes), 1)].mean()) if len(classes) > 1 else 1.0
    return spread / between if between > 0 else float("nan")


def tsne_head_tail_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], head: int, tail: int,
                          counts: pd.DataFrame, ratios: Mapping[str, Mapping[int, float]] | None = None,
                          title: str = "") -> plt.Figure:
    """One panel per run: 2-D embedding with the head and tail classes coloured, the rest grey.

    ``panels``: run -> (emb (N, 2), labels (N,)); ``ratios``: run -> {label: compactness}."""
    names = dict(zip(counts["label"].astype(int), counts["class_name"]))
    n_train = dict(zip(counts["label"].astype(int), counts["n_train"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5), squeeze=False)
    for ax, (run, (emb, labels)) in zip(axes[0], panels.items()):
        other = (labels != head) & (labels != tail)
        ax.scatter(emb[other, 0], emb[other, 1], s=3, c="lightgrey", alpha=0.5, label="other classes")
        for cls, colour, kind in ((head, "#4c72b0", "head"), (tail, "#c44e52", "tail")):
            m = labels == cls
            extra = f", spread {ratios[run][cls]:.2f}" if ratios and cls in ratios.get(run, {}) else ""
            ax.scatter(emb[m, 0], emb[m, 1], s=9, c=colour, alpha=0.85,
                       label=f"{kind}: {names.get(cls, cls)} (n={n_train.get(cls, '?')}{extra})")
        ax.set_title(run)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best", markerscale=2)
    fig.suptitle(title or "t-SNE of test embeddings (OLTR Fig. 3); spread = intra / inter-centroid distance")
    fig.tight_layout()
    return fig


# --- Fig. 8b: open-set threshold --------------------------------------------------------------
def sweep_runs(predictions: Mapping[tuple[str, int], pd.DataFrame], counts: pd.DataFrame,
               thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Open-set metrics per (run, seed, threshold) from each run's saved predictions
    (:func:`longtail.metrics.threshold_sweep`). Columns ``SWEEP_COLUMNS``."""
    thresholds = list(thresholds) or list(DEFAULT_THRESHOLDS)
    parts = []
    for (run, seed), pred in predictions.items():
        s = threshold_sweep(pred, counts, thresholds)
        s.insert(0, "seed", int(seed))
        s.insert(0, "run", run)
        parts.append(s)
    return pd.concat(parts, ignore_index=True)[list(SWEEP_COLUMNS)]


def threshold_figure(sweep: pd.DataFrame, title: str = "", marked: float | None = None) -> plt.Figure:
    """F-measure and open-set accuracy (share of open samples rejected) against the threshold,
    mean over seeds (band: min-max), one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((axes[0], F_MEASURE, "F-measure"), (axes[1], OPEN_REJECT_RATE, "open-set accuracy")):
        for run, g in sweep.groupby("run", sort=False):
            agg = g.groupby("threshold")[metric].agg(["mean", "min", "max"])
            ax.plot(agg.index, agg["mean"], marker="o", ms=3, label=run)
            if g["seed"].nunique() > 1:
                ax.fill_between(agg.index, agg["min"], agg["max"], alpha=0.15)
        if marked is not None:
            ax.axvline(marked, color="grey", ls=":", lw=1)
        ax.set_ylabel(label)
        _rate_axis(ax, "open-set probability threshold")
    return _finish(fig, axes, title or "Influence of the open-set threshold (OLTR Fig. 8b)", legend_size=7)


def _rate_axis(ax: plt.Axes, xlabel: str) -> None:
    """A panel of rates in [0, 1] against ``xlabel``."""
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _finish(fig: plt.Figure, axes: Sequence[plt.Axes], title: str, legend_size: int) -> plt.Figure:
    axes[0].legend(fontsize=legend_size)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- Fig. 8a: long-tailness -------------------------------------------------------------------
LONGTAIL_METRICS = (("closed", "overall", "top1", "closed-set accuracy"),
                    ("closed", "few", "top1", "few-shot accuracy"),
                    ("open", "overall", "f_measure", "open-set F-measure"))


def longtail_table(metrics: pd.DataFrame, x_of: Mapping[str, float], split: str = "test") -> pd.DataFrame:
    """Rows (dataset, x, run, seed, metric key, value) of the metrics the figure plots."""
    rows = []
    for setting, group, metric, label in LONGTAIL_METRICS:
        m = metrics[(metrics["split"] == split) & (metrics["setting"] == setting) & (metrics["group"] == group)
                    & (metrics["metric"] == metric)]
        for r in m.itertuples(index=False):
            rows.append({"dataset": r.dataset, "x": float(x_of[r.dataset]), "run": r.method, "seed": int(r.seed),
                         "metric": label, "value": float(r.value)})
    return pd.DataFrame(rows, columns=["dataset", "x", "run", "seed", "metric", "value"])


def longtail_figure(table: pd.DataFrame, x_label: str, log_x: bool = True, title: str = "") -> plt.Figure:
    """One panel per metric: value (mean over seeds) against the dataset's imbalance, per run."""
    labels = [lab for *_, lab in LONGTAIL_METRICS]
    fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 4))
    for ax, label in zip(axes, labels):
        sub = table[table["metric"] == label]
        for run, g in sub.groupby("run", sort=False):
            agg = g.groupby("x")["value"].mean().sort_index()
            ax.plot(agg.index, agg.values, marker="o", label=run)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(label)
        _rate_axis(ax, x_label)
    return _finish(fig, axes, title or "Influence of dataset long-tailness (OLTR Fig. 8a)", legend_size=8)


# --- Fig. 8c: number of open classes ----------------------------------------------------------
def open_class_names(samples: pd.DataFrame) -> list[str]:
    """Open classes of a curated dataset, in the order curation wrote them (config order)."""
    return list(dict.fromkeys(samples.loc[samples["split"] == "open", "class_name"].astype(str)))


def open_classes_sweep(pred: pd.DataFrame, samples: pd.DataFrame, open_classes: list[str], threshold: float,
                       split: str = "test") -> pd.DataFrame:
    """F-measure and open-set accuracy when the open set holds the first 0..n open classes.

    The model and its predictions stay fixed: only which open samples join the evaluation changes
    (``samples`` gives each open sample's class name). Columns n_open, open_classes, f_measure,
    open_reject_rate."""
    names = samples.set_index("sample_id")["class_name"].astype(str)
    test = pred[pred["split"] == split]
    opened = pred[pred["split"] == "open"]
    open_names = names.reindex(opened["sample_id"].astype(str)).to_numpy()
    y_known = test["label"].to_numpy(np.int64)
    p_known = open_set_predictions(test, threshold)
    p_open_all = open_set_predictions(opened, threshold)
    rows = []
    for n in range(len(open_classes) + 1):
        keep = np.isin(open_names, [str(c) for c in open_classes[:n]])
        p_open = p_open_all[keep]
        y = np.concatenate([y_known, np.full(len(p_open), UNKNOWN)])
        p = np.concatenate([p_known, p_open])
        rows.append({"n_open": n, "open_classes": ", ".join(map(str, open_classes[:n])),
                     "f_measure": f_measure(y, p),
                     "open_reject_rate": float(np.mean(p_open == UNKNOWN)) if len(p_open) else float("nan")})
    return pd.DataFrame(rows)


def open_classes_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """F-measure against the number of open classes in the test set, one line per (dataset, run)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (dataset, run), g in table.groupby(["dataset", "run"], sort=False):
        agg = g.groupby("n_open")["f_measure"].mean().sort_index()
        ax.plot(agg.index, agg.values, marker="o", label=f"{run} ({dataset})" if table["dataset"].nunique() > 1 else run)
    ax.set_xlabel("number of open classes in the test set")
    ax.set_ylabel("F-measure")
    ax.set_xticks(sorted(table["n_open"].unique()))
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Influence of the number of open classes (OLTR Fig. 8c)")
    fig.tight_layout()
    return fig
