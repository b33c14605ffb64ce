"""Rule mfm_tsne: t-SNE of the learned gamma / beta vectors, coloured by class (MFM Figs. 5, 9)."""

import pandas as pd

from longtail.io import save_figure
from longtail.methods.mfm.figures import modulation_embeddings, modulation_tsne_figure
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    table = pd.read_parquet(smk.input.modulation)
    emb = modulation_embeddings(table, int(smk.params.max_points), float(smk.params.perplexity), n_jobs=smk.threads)
    w = smk.wildcards
    fig = modulation_tsne_figure(emb, pd.read_parquet(smk.input.counts),
                                 f"Modulation parameters of {w.run} on {w.dataset} (seed {w.seed})")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
