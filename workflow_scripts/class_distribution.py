"""Rule class_distribution: sorted per-class training counts with shot-group bands."""

import pandas as pd

from longtail.io import save_figure
from longtail.plots import class_distribution
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    counts = pd.read_parquet(smk.input.counts)
    many, few = int(smk.params.shots["many"]), int(smk.params.shots["few"])
    fig = class_distribution(counts, many, few, f"{smk.wildcards.dataset}: training images per class")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
