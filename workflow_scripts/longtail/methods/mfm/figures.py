"""MFM figures from saved artefacts: t-SNE of the learned gamma / beta vectors (Figs. 5 and 9) and
confusion matrices of BaseModel vs MFM (Fig. 3). Pure functions returning data or Figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...plots import plt, stratified_subsample, tsne_embedding


def confusion_matrix(predictions: pd.DataFrame, num_classes: int, split: str = "test") -> np.ndarray:
    """Row-normalised (num_classes, num_classes) confusion of the known samples of ``split``:
    entry (i, j) = share of class-i samples predicted as j (closed set: argmax, no rejection);
    samples a method rejected itself (pred -1, OpenMax) count in their row's total only; rows
    without samples are NaN."""
    df = predictions[(predictions["split"] == split) & (predictions["label"] >= 0)]
    labels, preds = df["label"].to_numpy(np.int64), df["pred"].to_numpy(np.int64)
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    kept = preds >= 0  # a -1 would index the last column
    np.add.at(counts, (labels[kept], preds[kept]), 1.0)
    totals = np.bincount(labels, minlength=num_classes).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def confusion_figure(matrices: dict[str, np.ndarray], counts: pd.DataFrame, title: str = "") -> plt.Figure:
    """One heat map per run (title -> matrix), classes in label order (head to tail), recall on
    the diagonal printed in each cell."""
    names = [f"{n} ({k})" for n, k in zip(counts.sort_values("label")["class_name"],
                                          counts.sort_values("label")["n_train"])]
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.4), squeeze=False)
    for ax, (run, m) in zip(axes[0], matrices.items()):
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        c = len(m)
        for i in range(c):
            for j in range(c):
                if np.isfinite(m[i, j]) and (i == j or m[i, j] >= 0.05):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        ax.set_yticklabels(names, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (training images)")
        ax.set_title(f"{run}: mean recall {np.nanmean(np.diag(m)):.3f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def modulation_embeddings(table: pd.DataFrame, max_points: int = 1000, perplexity: float = 30.0,
                          seed: int = 0, n_jobs: int = 1) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """t-SNE of the gamma and of the beta vectors per modulated layer, on one stratified subsample
    of the samples: {(layer, 'gamma'|'beta'): (2-D embedding (n, 2), labels (n,))}. A vector that
    is constant over samples (gamma := 1 / beta := 0 ablations) is skipped."""
    out = {}
    for layer, grp in table.groupby("layer", sort=False):
        grp = grp.reset_index(drop=True)
        labels = grp["label"].to_numpy()
        keep = stratified_subsample(labels, max_points, seed)
        for which in ("gamma", "beta"):
            x = np.stack(grp[which].to_numpy())[keep].astype(np.float32)
            if np.allclose(x, x[:1]):
                continue
            out[(layer, which)] = (tsne_embedding(x, perplexity, seed=seed, n_jobs=n_jobs), labels[keep])
    return out


def modulation_tsne_figure(embeddings: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                           counts: pd.DataFrame, title: str = "") -> plt.Figure:
    """Rows = modulated layers, columns = gamma, beta; points coloured by class, few-shot as crosses."""
    layers = list(dict.fromkeys(k[0] for k in embeddings))
    names = dict(zip(counts["label"], counts["class_name"]))
    groups = dict(zip(counts["label"], counts["shot_group"]))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(max(len(layers), 1), 2, figsize=(10, 4.6 * max(len(layers), 1)), squeeze=False)
    for r, layer in enumerate(layers):
        for col, which in enumerate(("gamma", "beta")):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if (layer, which) not in embeddings:
                ax.set_title(f"{layer}: {which} fixed (not learned)", fontsize=9)
                continue
            emb, labels = embeddings[(layer, which)]
            for c in sorted(np.unique(labels)):
                m = labels == c
                few = groups.get(c) == "few"
                ax.scatter(emb[m, 0], emb[m, 1], s=12 if few else 6, marker="x" if few else "o",
                           color=cmap(int(c) % 10), alpha=0.8, label=f"{names.get(c, c)} ({groups.get(c, '?')})")
            ax.set_title(f"{layer}: {which}", fontsize=9)
            if r == 0 and col == 1:
                ax.legend(fontsize=6, markerscale=2, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
