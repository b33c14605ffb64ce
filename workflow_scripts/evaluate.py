"""Rule evaluate: long-form metrics and per-class accuracy of one run's predictions.

The readers refuse unreadable, corrupted or stale inputs (predictions computed from an earlier
samples table) in one line naming the file and its rebuild command; the outputs record the
checksums of the predictions and class counts they were computed from, so that the table and
summary refuse metrics left behind by a change of those."""

import logging

from longtail.contracts import per_class_table, read_class_counts, read_history, read_predictions
from longtail.io import write_parquet
from longtail.metrics import collapse_reason, evaluate, per_class_accuracy
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    preds = read_predictions(smk.input.predictions)
    counts = read_class_counts(smk.input.counts)
    w = smk.wildcards
    reason = collapse_reason(preds, len(counts), read_history(smk.input.history))
    if reason is not None:  # loud: the metrics record it and the tables print "collapsed", never the numbers
        logging.getLogger("longtail").warning("COLLAPSED run %s seed %s on %s: %s", w.run, w.seed, w.dataset, reason)
    metrics = evaluate(preds, counts, dataset=w.dataset, method=w.run, seed=int(w.seed),
                       threshold=smk.params.threshold, collapsed=reason)
    per_class = per_class_table(per_class_accuracy(preds[preds["split"] == "test"], len(counts)), counts,
                                w.run, int(w.seed))
    inputs = [smk.input.predictions, smk.input.counts, smk.input.history]
    write_parquet(metrics, smk.output.metrics, inputs)
    write_parquet(per_class, smk.output.per_class, inputs)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
