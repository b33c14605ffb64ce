"""Rule train: train one run (resuming from its checkpoint), then one inference pass of the
trained model over every split in the same process; write predictions, features, history,
config and model.pt (last)."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
import yaml

from longtail.contracts import FEATURE_SPLITS, PREDICTION_SPLITS, features_table, read_features, read_samples
from longtail.curation import far_open_entries, imbalanced_test_predictions
from longtail.data import load_split
from longtail.device import select_device
from longtail.io import torch_save, write_parquet, write_table, write_text
from longtail.pipeline import infer, load_trained, train
from longtail.runtime import log_to, source_params
from longtail.sources import load_source, with_far_sources


def write_inference(ckpt: dict, samples: pd.DataFrame, source, device, workers: int, feature_dtype: str,
                    samples_path: str, predictions_path: str, features_path: str) -> None:
    """Predictions (val/test/open/open_far, + the imbalanced tests' copies of test rows) and embeddings
    (every split) of the model as saved in ``ckpt``, in one pass over each split."""
    method, model, info = load_trained(ckpt)  # the model exactly as model.pt will hold it
    preds, feats = [], []
    present = set(samples["split"])
    for split_name in (s for s in FEATURE_SPLITS if s in present):
        split = load_split(source, samples, split_name, workers=workers)
        logits, emb = infer(method, model, split, info, device)
        if split_name in PREDICTION_SPLITS:
            preds.append(method.predictions(split, logits))
        feats.append(features_table(split, emb, feature_dtype))
    # both record the samples' checksum: evaluate and the classifier stages refuse them once it changes
    write_parquet(imbalanced_test_predictions(pd.concat(preds, ignore_index=True), samples), predictions_path,
                  [samples_path])
    write_table(pa.concat_tables(feats), features_path, [samples_path], row_group_size=65536)  # row groups = shards


def main(smk) -> None:
    log_to(smk.log[0])
    run = smk.params.run
    name, opts = source_params(smk.params.source)
    samples = read_samples(smk.input.samples)
    # the far open set's pools (curation far_open, recorded in the samples' metadata) beside the source's own
    far = [(i, e.split, load_source(*source_params(e.source))) for i, e in enumerate(far_open_entries(samples))]
    source = with_far_sources(load_source(name, opts), far) if far else load_source(name, opts)
    device = select_device(smk.params.device, smk.threads)
    workers = max(int(smk.threads) - 1, 0)
    parent = torch.load(smk.input.parent, map_location="cpu", weights_only=False) if smk.input.parent else None
    out_dir = Path(smk.output.model).parent
    ckpt, history = train(
        run["method"], run["params"], samples, source, seed=int(smk.wildcards.seed), device=device,
        checkpoint=out_dir / "checkpoint.pt", parent=parent,
        parent_features=read_features(smk.input.parent_features) if smk.input.parent_features else None,
        workers=workers,
    )
    # inference here, not in a job of its own: that would pay torch's start-up, the source's load
    # and the model's load once more per run (docs/performance.md)
    write_inference(ckpt, samples, source, device, workers, smk.params.feature_dtype, smk.input.samples,
                    smk.output.predictions, smk.output.features)
    write_parquet(history, smk.output.history)
    write_text(yaml.safe_dump({"run": smk.wildcards.run, "method": run["method"], "seed": int(smk.wildcards.seed),
                               "init_from": run["init_from"], "config": ckpt["config"]}, sort_keys=False),
               smk.output.config)
    torch_save(ckpt, smk.output.model)  # last: its presence marks the run complete
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
