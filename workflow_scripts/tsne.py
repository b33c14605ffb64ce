"""Rule tsne: t-SNE of one run's test (and open) embeddings."""

import pandas as pd
import pyarrow.parquet as pq

from longtail.contracts import feature_matrix
from longtail.io import save_figure
from longtail.plots import stratified_subsample, tsne_embedding, tsne_figure
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    table = pq.read_table(smk.input.features, filters=[("split", "in", ["test", "open"])])
    labels = table.column("label").to_numpy()
    keep = stratified_subsample(labels, int(smk.params.tsne["max_points"]))
    x = feature_matrix(table)[keep]
    emb = tsne_embedding(x, float(smk.params.tsne["perplexity"]), n_jobs=smk.threads)
    w = smk.wildcards
    fig = tsne_figure(emb, labels[keep], pd.read_parquet(smk.input.counts),
                      f"t-SNE of test embeddings: {w.run} on {w.dataset} (seed {w.seed})")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
