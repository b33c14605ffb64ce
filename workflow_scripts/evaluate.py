"""Rule evaluate: long-form metrics and per-class accuracy of one run's predictions.

The readers refuse unreadable, corrupted or stale inputs (predictions computed from an earlier
samples table) in one line naming the file and its rebuild command; the outputs record the
checksums of the predictions and class counts they were computed from, so that the table and
summary refuse metrics left behind by a change of those."""

from longtail.contracts import per_class_table, read_class_counts, read_predictions
from longtail.io import write_parquet
from longtail.metrics import evaluate, per_class_accuracy
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    preds = read_predictions(smk.input.predictions)
    counts = read_class_counts(smk.input.counts)
    w = smk.wildcards
    metrics = evaluate(preds, counts, dataset=w.dataset, method=w.run, seed=int(w.seed),
                       threshold=float(smk.params.threshold))
    per_class = per_class_table(per_class_accuracy(preds[preds["split"] == "test"], len(counts)), counts,
                                w.run, int(w.seed))
    inputs = [smk.input.predictions, smk.input.counts]
    write_parquet(metrics, smk.output.metrics, inputs)
    write_parquet(per_class, smk.output.per_class, inputs)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
