"""Rule evaluate: long-form metrics and per-class accuracy of one run's predictions."""

import pandas as pd

from longtail.io import write_parquet
from longtail.metrics import evaluate, per_class_accuracy
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    preds = pd.read_parquet(smk.input.predictions)
    counts = pd.read_parquet(smk.input.counts)
    w = smk.wildcards
    metrics = evaluate(preds, counts, dataset=w.dataset, method=w.run, seed=int(w.seed),
                       threshold=float(smk.params.threshold))
    per_class = per_class_accuracy(preds[preds["split"] == "test"], len(counts))
    per_class = per_class.merge(counts[["label", "class_name", "n_train", "shot_group"]], on="label")
    per_class.insert(0, "run", w.run)
    per_class.insert(1, "seed", int(w.seed))
    write_parquet(metrics, smk.output.metrics)
    write_parquet(per_class, smk.output.per_class)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
