# MetaModelNet (NIPS'17) figures, from saved artefacts only: Fig. 4 model dynamics (model.pt + the
# run's cached train features: a few fresh few-shot models pushed through the trained chain) and
# Fig. 3 per-class gain over plain (per-class metrics parquet files). Never retrains.
# Helpers (input functions, parse-time checks) of rules/metamodelnet.smk; kept apart for --lint.

MMN_CHAIN_METHODS = ("metamodelnet", "metamodelnet_fix_split")
MMN_METHODS = MMN_CHAIN_METHODS + ("model_regression",)


def mmn_runs(dataset, methods=MMN_METHODS):
    """Runs of MetaModelNet methods trained on a dataset."""
    return [r for r in runs_of(dataset) if RUNS[r]["method"] in methods]


def mmn_gain_runs(dataset):
    """Fig. 3 compares the MetaModelNet runs (and over-sampling, as the paper) with plain."""
    extra = [r for r in ("oversample",) if r in runs_of(dataset)]
    return ["plain"] + extra + mmn_runs(dataset)


def get_mmn_figures(wildcards=None):
    """Fig. 4 of every chain run and Fig. 3 of every dataset with plain and a MetaModelNet run (first seed)."""
    out = []
    for d in DATASETS:
        out += [f"results/figures/{d}/mmn_dynamics_{r}_seed{SEEDS[0]}.png" for r in mmn_runs(d, MMN_CHAIN_METHODS)]
        if "plain" in runs_of(d) and mmn_runs(d):
            out.append(f"results/figures/{d}/mmn_gain_seed{SEEDS[0]}.png")
    return out


def get_mmn_gain_inputs(wildcards):
    return expand(
        "results/metrics/{dataset}/{run}/seed{seed}.per_class.parquet",
        dataset=wildcards.dataset,
        run=mmn_gain_runs(wildcards.dataset),
        seed=wildcards.seed,
    )


def get_mmn_gain_runs(wildcards):
    return mmn_gain_runs(wildcards.dataset)
