"""Rule oltr_threshold_sweep: F-measure / open-set accuracy against the threshold (OLTR Fig. 8b)."""

import pandas as pd

from longtail.io import save_figure, write_parquet
from longtail.methods.oltr.figures import sweep_runs, threshold_figure
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    counts = pd.read_parquet(smk.input.counts)
    preds = {(run, int(seed)): pd.read_parquet(path)
             for (run, seed), path in zip(smk.params.run_seeds, smk.input.predictions)}
    sweep = sweep_runs(preds, counts, smk.params.thresholds)
    write_parquet(sweep, smk.output.table)
    spec = smk.params.threshold  # a number is marked; a rule (val_tpr) gives each run its own threshold
    fig = threshold_figure(sweep, f"Open-set threshold on {smk.wildcards.dataset} (OLTR Fig. 8b)",
                           marked=float(spec) if isinstance(spec, (int, float)) else None)
    save_figure(fig, smk.output.figure, dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
