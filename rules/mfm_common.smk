# Helpers of rules/mfm.smk (config checks of `modulator_from`, input functions of the transfer edge
# and of the MFM figures); kept apart from the rules as `snakemake --lint` asks.


def _mfm_source(run_name):
    """`params.modulator_from` of a run ({dataset, run}) or None."""
    return (RUNS[run_name].get("params") or {}).get("modulator_from")


def _check_modulator_sources():
    """Parse-time checks of every `modulator_from` against the config (the dataclass checks its shape)."""
    for name, run in RUNS.items():
        src = _mfm_source(name)
        if src is None:
            continue
        key = f"runs.{name}.params.modulator_from"
        if run.get("init_from"):
            raise WorkflowError(f"config error: {key}: set either init_from or modulator_from, not both")
        if src["dataset"] not in config["datasets"]:
            raise WorkflowError(f"config error: {key}.dataset: no dataset named '{src['dataset']}'")
        if src["run"] not in RUNS:
            raise WorkflowError(f"config error: {key}.run: no run named '{src['run']}'")
        if RUNS[src["run"]]["method"] != "mfm" or _mfm_source(src["run"]) is not None:
            raise WorkflowError(f"config error: {key}.run: '{src['run']}' must be an mfm run that learns its "
                                "own modulator (method mfm, no modulator_from)")
        if src["run"] not in runs_of(src["dataset"]):
            raise WorkflowError(f"config error: {key}: run '{src['run']}' is not trained on dataset "
                                f"'{src['dataset']}'; add it to datasets.{src['dataset']}.runs")


_check_modulator_sources()


def get_modulator_source(wildcards):
    """model.pt of the run whose frozen modulator this run trains with (same seed), else none."""
    src = _mfm_source(wildcards.run)
    if src is None:
        return []
    return f"results/train/{src['dataset']}/{src['run']}/seed{wildcards.seed}/model.pt"


def _mfm_settings():
    return config.get("mfm_figures", {})


def mfm_figure_runs(dataset):
    """Runs with a learned modulator network whose gamma / beta get a t-SNE figure."""
    wanted = _mfm_settings().get("runs")
    runs = [r for r in runs_of(dataset) if RUNS[r]["method"] == "mfm" and _mfm_source(r) is None]
    return runs if wanted is None else [r for r in wanted if r in runs]


def mfm_confusion_runs(dataset):
    """Runs (any method) drawn beside the base run in confusion matrices (Fig. 3)."""
    wanted = _mfm_settings().get("confusion_runs")
    if wanted is None:
        wanted = mfm_figure_runs(dataset)
    return [r for r in wanted if r in runs_of(dataset)]


def get_mfm_figures(wildcards=None):
    if "mfm_figures" not in config:
        return []
    out = []
    seed = SEEDS[0]
    base = _mfm_settings().get("base", "plain")
    for d in DATASETS:
        out += [f"results/figures/{d}/mfm_gamma_beta_{r}_seed{seed}.png" for r in mfm_figure_runs(d)]
        if base in runs_of(d):
            out += [f"results/figures/{d}/mfm_confusion_{r}_seed{seed}.png" for r in mfm_confusion_runs(d)]
    return out


def get_mfm_base_predictions(wildcards):
    base = _mfm_settings().get("base", "plain")
    return f"results/predictions/{wildcards.dataset}/{base}/seed{wildcards.seed}.parquet"
