"""MetaModelNet figures: Fig. 4 (model dynamics: few-shot models and their predicted trajectories
through the residual blocks, t-SNE, 1-shot purple -> many-shot red) and Fig. 3 (per-class accuracy
gain over the plain baseline against the training count). Pure functions; scripts do the I/O."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from . import metanet as M  # noqa: E402
from .. import make_config  # noqa: E402
from ..frozen import sub_state  # noqa: E402
from .method import build_metanet  # noqa: E402


def dynamics_points(state: Mapping[str, torch.Tensor], cfg: Mapping, x: np.ndarray, y: np.ndarray,
                    classes: Sequence[int], subsets: int = 3, seed: int = 0) -> pd.DataFrame:
    """Fresh few-shot models (k = 1..2^N, ``subsets`` each) of ``classes`` from the train features,
    passed through the trained chain of a model.pt ``state``: one row per (model, stage) with the
    parameter vector. stage j = the prediction after blocks entry..j-1 (stage = log2 k for the
    input); stage N+1 = the predicted many-shot model; kind 'target' rows are theta*."""
    conf = make_config("metamodelnet", cfg)  # the run's saved config
    d = state["head.mean"].numel()
    net = build_metanet(conf, d)
    net.load_state_dict(sub_state(state, "head.metanet."))
    net.eval()
    mean, scale = state["head.mean"].float(), state["head.scale"].float()
    z = M.augment(torch.as_tensor(x, dtype=torch.float32), mean, scale)
    rng = np.random.default_rng(seed)
    pool = M.negative_pool(y, conf.negatives_per_class, rng, conf.max_negatives)
    nb = conf.num_blocks
    counts = np.bincount(y, minlength=max(classes) + 1)
    req = [(c, 2 ** i, subsets) for c in classes for i in range(nb) if 2 ** i < counts[c]]
    spec = M.draw_subsets(y, req, rng)
    theta, _ = M.fit_bank(z, torch.as_tensor(y), pool, spec, conf.l2, conf.solver_iters)
    if net.residual:
        entry = M.entry_block(torch.as_tensor(spec.model_k), nb)
    else:
        entry = torch.zeros(len(spec), dtype=torch.long)
    with torch.no_grad():
        traj = net.trajectory(theta, entry)
    rows = []
    for p in range(len(spec)):
        e = int(entry[p])
        states = [traj[0][p]] + [traj[j + 1][p] for j in range(e, len(traj) - 1)] if net.residual else \
            [traj[0][p], traj[-1][p]]
        stages = list(range(e, nb + 1)) if net.residual else [e, nb]
        for s, v in zip(stages, states):
            rows.append({"model": p, "class": int(spec.model_class[p]), "k": int(spec.model_k[p]), "stage": s,
                         "kind": "model", "theta": v.numpy()})
    for c in classes:
        rows.append({"model": -1 - c, "class": c, "k": int(counts[c]), "stage": nb, "kind": "target",
                     "theta": state["head.theta_star"][c].float().numpy()})
    return pd.DataFrame(rows)


def dynamics_figure(points: pd.DataFrame, emb: np.ndarray, num_blocks: int, names: Mapping[int, str],
                    title: str) -> plt.Figure:
    """Fig. 4: points coloured by stage (rainbow, 1-shot purple -> many-shot red), each model's
    trajectory as a thin line, theta* of each class as a black star with its name."""
    cmap = plt.get_cmap("rainbow")
    fig, ax = plt.subplots(figsize=(7, 6))
    pts = points.reset_index(drop=True)
    for _, grp in pts[pts["kind"] == "model"].groupby("model"):
        idx = grp.index.to_numpy()
        ax.plot(emb[idx, 0], emb[idx, 1], color="grey", lw=0.4, alpha=0.5, zorder=1)
    m = (pts["kind"] == "model").to_numpy()
    sc = ax.scatter(emb[m, 0], emb[m, 1], c=pts.loc[m, "stage"], cmap=cmap, vmin=0, vmax=num_blocks, s=10, zorder=2)
    for i in np.flatnonzero(~m):
        c = int(pts.loc[i, "class"])
        ax.scatter(emb[i, 0], emb[i, 1], marker="*", s=140, c="black", zorder=3)
        ax.annotate(f"{names.get(c, c)} (n={int(pts.loc[i, 'k'])})", emb[i], fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    cb = fig.colorbar(sc, ax=ax, ticks=range(num_blocks + 1))
    cb.ax.set_yticklabels([f"{2 ** j}-shot" for j in range(num_blocks)] + ["many-shot"])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def gain_table(per_class: Mapping[str, pd.DataFrame], base: str) -> pd.DataFrame:
    """Per-class accuracy gain of every run over ``base`` (label, class_name, n_train, run, gain)."""
    ref = per_class[base].set_index("label")["accuracy"]
    out = []
    for run, df in per_class.items():
        if run == base:
            continue
        d = df[["label", "class_name", "n_train", "accuracy"]].copy()
        d["gain"] = d["accuracy"].to_numpy() - ref.loc[d["label"]].to_numpy()
        d["run"] = run
        out.append(d)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["label", "class_name", "n_train", "accuracy", "gain", "run"])


def gain_figure(gains: pd.DataFrame, base: str, title: str) -> plt.Figure:
    """Fig. 3: bars of the per-class gain over ``base`` (left axis, classes sorted by training
    count, head -> tail), the training count as a line on a log right axis."""
    runs = list(dict.fromkeys(gains["run"]))
    order = gains.drop_duplicates("label").sort_values("n_train", ascending=False)
    x = np.arange(len(order))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(order) + 3), 4))
    for i, run in enumerate(runs):
        g = gains[gains["run"] == run].set_index("label").loc[order["label"], "gain"]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, 100 * g.to_numpy(), width, label=run)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(f"accuracy gain over {base} (points)")
    ax.set_xticks(x)
    ax.set_xticklabels(order["class_name"], rotation=60, ha="right", fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(x, order["n_train"], "k.-", lw=1, label="training images")
    ax2.set_yscale("log")
    ax2.set_ylabel("training images (log)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
