"""Rule mfm_modulation: gamma and beta that a trained MFM modulator network gives each sample of a
split (the artefact the MFM t-SNE figures are drawn from)."""

import pandas as pd
import torch

from longtail.data import load_split
from longtail.device import select_device
from longtail.io import write_parquet
from longtail.methods.mfm.method import modulation_table
from longtail.pipeline import load_trained
from longtail.runtime import log_to, source_params
from longtail.sources import load_source


def main(smk) -> None:
    log_to(smk.log[0])
    samples = pd.read_parquet(smk.input.samples)
    name, opts = source_params(smk.params.source)
    method, model, info = load_trained(torch.load(smk.input.model, map_location="cpu", weights_only=False))
    if not hasattr(method, "modulation_params"):
        raise ValueError(f"run {smk.wildcards.run} ({method.name}) has no modulator network; list mfm runs only")
    device = select_device(smk.params.device, smk.threads)
    split = load_split(load_source(name, opts), samples, smk.params.split)
    write_parquet(modulation_table(method, model, split, info, device.device), smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
