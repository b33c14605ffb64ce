"""Rule oltr_open_classes: F-measure against the number of open classes (OLTR Fig. 8c)."""

import pandas as pd

from longtail.io import save_figure, write_parquet
from longtail.methods.oltr.figures import open_class_names, open_classes_figure, open_classes_sweep
from longtail.metrics import resolve_threshold
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    samples = {d: pd.read_parquet(p) for d, p in zip(smk.params.datasets, smk.input.samples)}
    parts = []
    for (dataset, run, seed), path in zip(smk.params.run_items, smk.input.predictions):
        pred = pd.read_parquet(path)
        t = open_classes_sweep(pred, samples[dataset], open_class_names(samples[dataset]),
                               resolve_threshold(smk.params.thresholds[dataset], pred))
        parts.append(t.assign(dataset=dataset, run=run, seed=int(seed)))
    table = pd.concat(parts, ignore_index=True)
    write_parquet(table, smk.output.table)
    save_figure(open_classes_figure(table), smk.output.figure, dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
