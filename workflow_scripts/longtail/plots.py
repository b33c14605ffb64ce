"""Figures (matplotlib, Agg backend). Pure functions returning Figure objects; scripts save them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GROUP_COLOURS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}


def class_distribution(counts: pd.DataFrame, many: int, few: int, title: str = "") -> plt.Figure:
    """Sorted training counts per class (log scale) with the shot-group bands."""
    c = counts.sort_values("n_train", ascending=False).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(np.arange(len(c)), c["n_train"], color=[GROUP_COLOURS[g] for g in c["shot_group"]])
    ax.set_yscale("log")
    top = max(float(c["n_train"].max()) * 2, many * 2)
    ax.axhspan(many, top, color=GROUP_COLOURS["many"], alpha=0.08, label=f"many (> {many})")
    ax.axhspan(few, many, color=GROUP_COLOURS["medium"], alpha=0.08, label=f"medium ({few}–{many})")
    ax.axhspan(0.8, few, color=GROUP_COLOURS["few"], alpha=0.08, label=f"few (< {few})")
    ax.set_ylim(0.8, top)
    # MFM appendix C.1 imbalanced test splits, when curated (their Fig. 8b-c), over the same classes
    for col, label, marker in (("n_test_reversed", "Test-1 (reversed)", "v"), ("n_test_permuted", "Test-2 (permuted)", "o")):
        if col in c:
            ax.plot(np.arange(len(c)), c[col], marker=marker, color="black", lw=0.8,
                    ls="--" if marker == "v" else ":", label=f"{label} test images")
    ax.set_xticks(np.arange(len(c)))
    ax.set_xticklabels(c["class_name"], rotation=60, ha="right", fontsize=7)
    tests = any(col in c for col in ("n_test_reversed", "n_test_permuted"))
    ax.set_ylabel("images (log)" if tests else "training images (log)")
    ax.set_title(title or "Class distribution")
    if tests:  # beside the axes: the test profiles cross the whole plot
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    else:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def stratified_subsample(labels: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` rows, keeping every class's share (at least one each)."""
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    frac = max_points / len(labels)
    keep = [rng.choice(idx, max(1, int(round(len(idx) * frac))), replace=False)
            for idx in (np.flatnonzero(labels == c) for c in np.unique(labels))]
    return np.sort(np.concatenate(keep))


def tsne_embedding(x: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """2-D openTSNE embedding. openTSNE picks its gradient method by size ("auto"): FFT
    interpolation from 10,000 points, Barnes-Hut below (the figures' 2,000-point subsamples);
    benchmarks/tsne.py measures both against scikit-learn."""
    from openTSNE import TSNE

    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    return np.asarray(TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs).fit(x))


def tsne_figure(emb: np.ndarray, labels: np.ndarray, counts: pd.DataFrame, title: str) -> plt.Figure:
    """Scatter coloured by class; few-shot classes as crosses, open samples in grey."""
    names = dict(zip(counts["label"], counts["class_name"]))
    groups = dict(zip(counts["label"], counts["shot_group"]))
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, c in enumerate(sorted(np.unique(labels))):
        m = labels == c
        if c < 0:
            ax.scatter(emb[m, 0], emb[m, 1], s=4, c="lightgrey", label="open set", alpha=0.6)
            continue
        marker = "x" if groups.get(c) == "few" else "o"
        ax.scatter(emb[m, 0], emb[m, 1], s=6 if marker == "o" else 12, marker=marker, color=cmap(i % 20),
                   label=f"{names.get(c, c)} ({groups.get(c, '?')})", alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    fig.tight_layout()
    return fig


def pick_samples(samples: pd.DataFrame, per_class: int, split: str = "train", seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` rows of ``split`` for each known class, in label order (a seeded draw,
    so the grid shows the same images every time)."""
    if per_class < 1:
        raise ValueError(f"sample grid: per_class must be >= 1, got {per_class}")
    rows = samples[(samples["split"] == split) & (samples["label"] >= 0)]
    if rows.empty:
        raise ValueError(f"sample grid: the samples table has no '{split}' rows of a known class")
    rng = np.random.default_rng(seed)
    picked = [g.iloc[np.sort(rng.choice(len(g), min(per_class, len(g)), replace=False))]
              for _, g in rows.groupby("label", sort=True)]
    return pd.concat(picked, ignore_index=True)


def sample_grid(images: list[np.ndarray], labels: np.ndarray, class_names: list[str], per_class: int,
                title: str = "", columns: int = 8) -> plt.Figure:
    """A few images per class: ``columns`` classes a row of blocks, each block ``per_class``
    images side by side under the class name. ``images`` are uint8 (H, W) or (H, W, C) arrays in
    the order of ``labels`` (grouped by class); grayscale is drawn ink-dark on white."""
    if len(images) != len(labels):
        raise ValueError(f"sample grid: {len(images)} images but {len(labels)} labels")
    order = list(dict.fromkeys(int(x) for x in labels))  # classes in first-seen order
    rows = -(-len(order) // columns)
    fig, axes = plt.subplots(rows, columns * per_class, squeeze=False,
                             figsize=(columns * per_class * 0.45, rows * 0.62 + (0.4 if title else 0.1)))
    for ax in axes.flat:
        ax.axis("off")
    labels = np.asarray(labels)
    for k, c in enumerate(order):
        r, block = divmod(k, columns)
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            ax = axes[r, block * per_class + j]
            img = images[i]
            if img.ndim == 2:
                ax.imshow(255 - img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
        axes[r, block * per_class].set_title(str(class_names[k]), fontsize=8, loc="left", pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93 if title else 0.97, wspace=0.05, hspace=0.45)
    return fig
