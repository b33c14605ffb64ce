"""Rule infer: predictions (val/test/open) and embeddings of one trained run, in one pass."""

import pandas as pd
import pyarrow as pa
import torch

from longtail.contracts import FEATURE_SPLITS, PREDICTION_SPLITS, features_table, predictions_table, read_samples
from longtail.curation import imbalanced_test_predictions
from longtail.data import load_split
from longtail.device import select_device
from longtail.io import write_parquet, write_table
from longtail.pipeline import infer, load_trained
from longtail.runtime import log_to, source_params
from longtail.sources import load_source


def main(smk) -> None:
    log_to(smk.log[0])
    samples = read_samples(smk.input.samples)
    name, opts = source_params(smk.params.source)
    source = load_source(name, opts)
    method, model, info = load_trained(torch.load(smk.input.model, map_location="cpu", weights_only=False))
    device = select_device(smk.params.device, smk.threads)
    preds, feats = [], []
    present = set(samples["split"])
    for split_name in (s for s in FEATURE_SPLITS if s in present):
        split = load_split(source, samples, split_name, workers=max(int(smk.threads) - 1, 0))
        logits, emb = infer(method, model, split, info, device)
        if split_name in PREDICTION_SPLITS:
            preds.append(predictions_table(split, logits))
        feats.append(features_table(split, emb, smk.params.feature_dtype))
    # + rows of the imbalanced test splits (copies of test rows: their test predictions)
    # both record the samples' checksum: evaluate and the classifier stages refuse them once it changes
    write_parquet(imbalanced_test_predictions(pd.concat(preds, ignore_index=True), samples), smk.output.predictions,
                  [smk.input.samples])
    write_table(pa.concat_tables(feats), smk.output.features, [smk.input.samples],
                row_group_size=65536)  # row groups = shards


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
