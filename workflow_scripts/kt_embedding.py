"""Rule kt_embedding: Fig. 6, a 2-D embedding of validation features of a few-shot class and the two
classes it attends to most, with prototypes, classifier weights and the KT classifier marked."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from longtail.contracts import feature_matrix
from longtail.io import save_figure
from longtail.methods.kt.figures import embed_2d, embedding_points, kt_embedding_figure, kt_state, pick_few_shot_class
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    opts = smk.params.kt_figures
    ckpt = torch.load(smk.input.model, map_location="cpu", weights_only=False)
    st = kt_state(ckpt["model"])
    table = pq.read_table(smk.input.features, filters=[("split", "==", opts["split"])])
    feats, labels = feature_matrix(table), table.column("label").to_numpy()
    cls = opts["class"]
    cls = pick_few_shot_class(st.counts, int(smk.params.few)) if cls is None else int(cls)
    member = int(np.flatnonzero(st.ks >= 0)[0]) if (st.ks >= 0).any() else 0
    x, point_labels, classes = embedding_points(st, feats, labels, cls, member)
    emb = embed_2d(x, opts["embedding"], float(opts["perplexity"]))
    counts = pd.read_parquet(smk.input.counts).query("label >= 0").sort_values("label")
    w = smk.wildcards
    fig = kt_embedding_figure(emb, point_labels, classes, counts["class_name"].tolist(),
                              counts["shot_group"].tolist(),
                              f"{w.run} (k = {int(st.ks[member])}) on {w.dataset}: "
                              f"{opts['split']} features, seed {w.seed}")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
