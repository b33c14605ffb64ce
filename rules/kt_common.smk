# Knowledge-transfer (KT, CVPR 2022) figures, drawn from a KT run's model.pt (its head keeps the
# prototypes, classifier weights, attention and KT classifiers) and cached features: never retrains.
# Helpers (input functions, parse-time checks) of rules/kt.smk; kept apart for --lint.

for _run in config.get("kt_figures", {}).get("runs", []):
    if _run not in RUNS or not RUNS[_run]["method"].startswith("kt_"):
        raise WorkflowError(f"config error: kt_figures.runs: '{_run}' is not a run of a kt_* method")


def kt_figure_runs(dataset):
    """KT runs named under kt_figures.runs that are trained on this dataset."""
    return [r for r in config.get("kt_figures", {}).get("runs", []) if r in runs_of(dataset)]


def get_kt_figures(wildcards=None):
    """Fig. 6 embedding and Appendix D attention heat map of every kt_figures run (first seed)."""
    return [
        f"results/figures/{d}/kt_{kind}_{r}_seed{SEEDS[0]}.png"
        for d in DATASETS
        for r in kt_figure_runs(d)
        for kind in ("embedding", "attention")
    ]
