"""Rule oltr_longtailness: accuracy and F-measure against dataset imbalance (OLTR Fig. 8a)."""

import pandas as pd

from longtail.io import save_figure, write_parquet
from longtail.methods.oltr.figures import longtail_figure, longtail_table
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    metrics = pd.concat([pd.read_parquet(p) for p in smk.input.metrics], ignore_index=True)
    table = longtail_table(metrics, smk.params.x_of)
    write_parquet(table, smk.output.table)
    save_figure(longtail_figure(table, smk.params.x_label, log_x=smk.params.log_x), smk.output.figure, dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
