"""Rule mmn_dynamics: Fig. 4, t-SNE of few-shot models and their trajectories through a trained
MetaModelNet (model.pt + the run's cached train features; no retraining)."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from longtail.contracts import feature_matrix
from longtail.io import save_figure, write_parquet
from longtail.plots import tsne_embedding
from longtail.methods.metamodelnet.figures import dynamics_figure, dynamics_points
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    ckpt = torch.load(smk.input.model, map_location="cpu", weights_only=False)
    table = pq.read_table(smk.input.features, filters=[("split", "==", "train")])
    x, y = feature_matrix(table), table.column("label").to_numpy()
    counts = pd.read_parquet(smk.input.counts).query("label >= 0").sort_values("label")
    n = counts["n_train"].to_numpy()
    order = np.argsort(-n)
    classes = sorted(set(order[:3].tolist()) | set(order[-2:].tolist()))  # 3 head + 2 tail classes
    pts = dynamics_points(ckpt["model"], ckpt["config"], x, y, classes, subsets=3, seed=int(smk.wildcards.seed))
    emb = tsne_embedding(np.stack(pts["theta"].to_numpy()), perplexity=15.0, n_jobs=smk.threads)
    out = pts.drop(columns="theta").assign(x=emb[:, 0], y=emb[:, 1])
    write_parquet(out, smk.output.points)
    w = smk.wildcards
    fig = dynamics_figure(pts, emb, int(ckpt["config"]["num_blocks"]), dict(zip(counts["label"], counts["class_name"])),
                          f"Model dynamics (t-SNE of weights): {w.run}, {w.dataset}")
    save_figure(fig, smk.output.png, dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
