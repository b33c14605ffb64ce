"""Rule oltr_tsne: t-SNE of two runs' test embeddings for a head and a tail class (OLTR Fig. 3)."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from longtail.contracts import feature_matrix
from longtail.io import save_figure
from longtail.plots import stratified_subsample, tsne_embedding
from longtail.methods.oltr.figures import compactness, head_tail_classes, tsne_head_tail_figure
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    counts = pd.read_parquet(smk.input.counts)
    cfg = smk.params.oltr_figures
    head, tail = head_tail_classes(counts, cfg["head_class"], cfg["tail_class"])
    tsne = smk.params.tsne
    panels, ratios = {}, {}
    for run, path in zip(smk.params.runs, smk.input.features):
        table = pq.read_table(path, filters=[("split", "==", "test")])
        labels = table.column("label").to_numpy()
        x = feature_matrix(table)
        ratios[run] = {c: compactness(x, labels, c) for c in (head, tail)}
        keep = stratified_subsample(labels, int(tsne["max_points"]))
        # the tail class is rare in the training set, not in the balanced test set: keep all of it
        keep = np.union1d(keep, np.flatnonzero((labels == head) | (labels == tail)))
        emb = tsne_embedding(x[keep], float(tsne["perplexity"]), n_jobs=smk.threads)
        panels[run] = (emb, labels[keep])
    w = smk.wildcards
    fig = tsne_head_tail_figure(panels, head, tail, counts,
                                ratios, f"t-SNE of test embeddings on {w.dataset} (seed {w.seed}, OLTR Fig. 3)")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
