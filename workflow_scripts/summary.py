"""Rule summary: every metric of every dataset/run, aggregated over seeds, in one parquet."""

import pandas as pd

from longtail.contracts import read_metrics
from longtail.io import write_parquet
from longtail.runtime import log_to
from longtail.tables import summarise


def main(smk) -> None:
    log_to(smk.log[0])
    metrics = pd.concat([read_metrics(p) for p in smk.input.metrics], ignore_index=True)  # refuses stale ones
    write_parquet(summarise(metrics), smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
