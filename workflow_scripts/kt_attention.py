"""Rule kt_attention: Appendix D heat map of the top-10 attended classes per class (k = 0)."""

import pandas as pd
import torch

from longtail.io import save_figure
from longtail.methods.kt.figures import attention_heatmap, attention_k0, kt_state
from longtail.runtime import log_to


def main(smk) -> None:
    log_to(smk.log[0])
    ckpt = torch.load(smk.input.model, map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    st = kt_state(ckpt["model"])
    alpha = attention_k0(st, float(cfg["tau"]), cfg["attention"])
    counts = pd.read_parquet(smk.input.counts).query("label >= 0").sort_values("label")
    w = smk.wildcards
    fig = attention_heatmap(alpha, counts["class_name"].tolist(), int(smk.params.kt_figures["top"]),
                            f"KT attention alpha_ij, k = 0, tau = {cfg['tau']}: {w.run} on {w.dataset}")
    save_figure(fig, smk.output[0], dpi=120)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
