"""Rule mmn_gain: Fig. 3, per-class test accuracy gain over the plain baseline vs training count,
from the per-class metrics parquet files."""

import pandas as pd

from longtail.io import save_figure, write_parquet
from longtail.methods.metamodelnet.figures import gain_figure, gain_table
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    per_class = {run: pd.read_parquet(path) for run, path in zip(smk.params.runs, smk.input.per_class)}
    gains = gain_table(per_class, smk.params.base)
    write_parquet(gains, smk.output.table)
    w = smk.wildcards
    save_figure(gain_figure(gains, smk.params.base, f"Per-class gain over {smk.params.base}: {w.dataset}, seed {w.seed}"),
                smk.output.png, dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
