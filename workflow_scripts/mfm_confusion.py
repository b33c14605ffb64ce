"""Rule mfm_confusion: confusion matrices of the BaseModel run beside another run (MFM Fig. 3)."""

import pandas as pd

from longtail.io import save_figure
from longtail.methods.mfm.figures import confusion_figure, confusion_matrix
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    counts = pd.read_parquet(smk.input.counts)
    w = smk.wildcards
    mats = {smk.params.base: confusion_matrix(pd.read_parquet(smk.input.base), len(counts)),
            w.run: confusion_matrix(pd.read_parquet(smk.input.run), len(counts))}
    fig = confusion_figure(mats, counts, f"Test confusion on {w.dataset} (seed {w.seed})")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
