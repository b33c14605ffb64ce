"""Rule train: train one run (resuming from its checkpoint), write model.pt, history, config."""

from pathlib import Path

import pandas as pd
import torch
import yaml

from longtail.contracts import read_features
from longtail.device import select_device
from longtail.io import torch_save, write_parquet, write_text
from longtail.pipeline import train
from longtail.runtime import log_to, source_params
from longtail.sources import load_source


def main(smk) -> None:
    log_to(smk.log[0])
    run = smk.params.run
    name, opts = source_params(smk.params.source)
    parent = torch.load(smk.input.parent, map_location="cpu", weights_only=False) if smk.input.parent else None
    out_dir = Path(smk.output.model).parent
    ckpt, history = train(
        run["method"], run["params"], pd.read_parquet(smk.input.samples), load_source(name, opts),
        seed=int(smk.wildcards.seed), device=select_device(smk.params.device, smk.threads),
        checkpoint=out_dir / "checkpoint.pt", parent=parent,
        parent_features=read_features(smk.input.parent_features) if smk.input.parent_features else None,
        workers=max(int(smk.threads) - 1, 0),
    )
    write_parquet(history, smk.output.history)
    write_text(yaml.safe_dump({"run": smk.wildcards.run, "method": run["method"], "seed": int(smk.wildcards.seed),
                               "init_from": run["init_from"], "config": ckpt["config"]}, sort_keys=False),
               smk.output.config)
    torch_save(ckpt, smk.output.model)  # last: its presence marks the run complete
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
