"""Figures of knowledge transfer (KT, CVPR 2022): Fig. 6 (2-D embedding of a few-shot class and the
two classes it attends to most, with prototypes, classifiers and the KT classifier) and Appendix D
(top-10 attended classes per class as a heat map). Pure functions; scripts do the I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from . import transfer as K  # noqa: E402
from ...plots import tsne_embedding  # noqa: E402


@dataclass
class KTState:
    """What a KT run's head holds (see methods.kt.KTHead): p, w (C, D), members (M, C, D),
    attention (M, C, C), member thresholds ks (M,) and training counts (C,)."""

    prototypes: np.ndarray
    base_weight: np.ndarray
    weight: np.ndarray
    attention: np.ndarray
    ks: np.ndarray
    counts: np.ndarray


def kt_state(state_dict: dict) -> KTState:
    """Read a KT model.pt's ``model`` state dict."""
    g = {k: state_dict[f"head.{k}"].float().numpy() if k != "ks" and k != "counts" else state_dict[f"head.{k}"].numpy()
         for k in ("prototypes", "base_weight", "weight", "attention", "ks", "counts")}
    return KTState(**g)


def attention_k0(st: KTState, tau: float = 10.0, direction: str = "p->w") -> np.ndarray:
    """Appendix D: attention with k = 0 ("all classes treated identically"). (C, C)."""
    reps = {"p": torch.from_numpy(st.prototypes), "w": torch.from_numpy(st.base_weight)}
    q, v = K.ATTENTION_DIRECTIONS[direction]
    return K.attention(reps[q], reps[v], K.source_mask(st.counts, 0), tau).numpy()


def attention_heatmap(alpha: np.ndarray, names: Sequence[str], top: int = 10, title: str = "") -> plt.Figure:
    """Rows: classes; with C <= ``top`` the full C x C attention matrix, else each class's ``top``
    most attended classes by rank (cells annotated with the class name)."""
    c = alpha.shape[0]
    names = [str(n) for n in names]
    if c <= top:
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * c, 0.8 + 0.5 * c))
        im = ax.imshow(alpha, cmap="viridis", vmin=0, vmax=max(float(alpha.max()), 1e-9))
        ax.set_xticks(range(c))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("attended class j (classifier w_j)")
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{alpha[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if alpha[i, j] < 0.6 * alpha.max() else "black")
    else:
        order = np.argsort(-alpha, axis=1)[:, :top]  # (C, top)
        vals = np.take_along_axis(alpha, order, axis=1)
        fig, ax = plt.subplots(figsize=(1.2 * top, 0.8 + 0.3 * c))
        im = ax.imshow(vals, cmap="viridis", aspect="auto")
        ax.set_xticks(range(top))
        ax.set_xticklabels([str(r + 1) for r in range(top)])
        ax.set_xlabel("rank of attended class")
        for i in range(c):
            for r in range(top):
                ax.text(r, i, names[order[i, r]][:10], ha="center", va="center", fontsize=5, color="white")
    ax.set_yticks(range(c))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylabel("class i (prototype p_i)")
    fig.colorbar(im, ax=ax, label="attention alpha_ij")
    ax.set_title(title or "KT attention (k = 0)", fontsize=9)
    fig.tight_layout()
    return fig


def pick_few_shot_class(counts: np.ndarray, few: int) -> int:
    """The rarest class that has training images (a few-shot class when any is below ``few``)."""
    seen = np.flatnonzero(counts > 0)
    if len(seen) == 0:
        seen = np.arange(len(counts))
    return int(seen[np.argmin(counts[seen])])


def embedding_points(st: KTState, feats: np.ndarray, labels: np.ndarray, cls: int, member: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Fig. 6 points: L2-normalised features of ``cls`` and its two most attended classes, then for
    each of the three classes its prototype, classifier weight and KT classifier (all normalised,
    cosine geometry). Returns (X (n + 9, D), point labels (n,), [cls, j1, j2])."""
    alpha = st.attention[member]
    if not alpha[cls].any():  # a prototype-only member: use the attention at k = 0
        alpha = attention_k0(st)
    classes = [cls] + K.top_attended(torch.from_numpy(alpha), cls, 2)
    sel = np.isin(labels, classes)
    x = feats[sel] / np.maximum(np.linalg.norm(feats[sel], axis=1, keepdims=True), 1e-12)
    marks = []
    for c in classes:
        for v in (st.prototypes[c], st.base_weight[c], st.weight[member, c]):
            marks.append(v / max(float(np.linalg.norm(v)), 1e-12))
    return np.vstack([x, np.asarray(marks)]), labels[sel], classes


def embed_2d(x: np.ndarray, method: str = "tsne", perplexity: float = 15.0, seed: int = 0) -> np.ndarray:
    """2-D embedding: openTSNE (``tsne``) or PCA (``pca``; tiny sets)."""
    if method == "pca" or len(x) < 10:
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        return xc @ vt[:2].T
    return tsne_embedding(x, perplexity=perplexity, seed=seed)


def kt_embedding_figure(emb: np.ndarray, point_labels: np.ndarray, classes: list[int], names: Sequence[str],
                        groups: Sequence[str], title: str = "") -> plt.Figure:
    """Scatter of the samples of three classes (circles) with, per class, its prototype (square),
    classifier weight (triangle) and KT classifier (star)."""
    n = len(point_labels)
    colours = ["#c44e52", "#8172b3", "#55a868"]  # the paper: red few-shot, purple, green
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for ci, c in enumerate(classes):
        m = point_labels == c
        ax.scatter(emb[:n][m, 0], emb[:n][m, 1], s=14, color=colours[ci], alpha=0.5,
                   label=f"{names[c]} ({groups[c]})")
    for ci, c in enumerate(classes):
        base = n + 3 * ci
        for off, marker, kind in ((0, "s", "prototype"), (1, "^", "classifier weight"), (2, "*", "KT classifier")):
            ax.scatter(emb[base + off, 0], emb[base + off, 1], marker=marker, s=220 if marker == "*" else 110,
                       color=colours[ci], edgecolor="black", linewidth=1.0,
                       label=kind if ci == 0 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "KT: few-shot class and its two most attended classes", fontsize=9)
    fig.tight_layout()
    return fig
