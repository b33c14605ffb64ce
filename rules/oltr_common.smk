# Helpers of rules/oltr.smk (config checks and input functions of the OLTR figures); kept apart
# from the rules as `snakemake --lint` asks.

OLTR_FIGURES = config.get("oltr_figures", {})


def _oltr_check():
    """Parse-time checks of oltr_figures (one-line errors naming the key)."""
    # longtail_runs / open_classes_runs default to [plain, oltr]: only checked when their figure is on
    used = {"longtail_runs": "longtail_datasets", "open_classes_runs": "open_classes_datasets"}
    for key in ("tsne_runs", "threshold_runs", "longtail_runs", "open_classes_runs"):
        if key in used and not OLTR_FIGURES.get(used[key]):
            continue
        for r in OLTR_FIGURES.get(key, []):
            if r not in RUNS:
                raise WorkflowError(f"config error: oltr_figures.{key}: no run named '{r}'")
    for key in ("longtail_datasets", "open_classes_datasets"):
        for d in OLTR_FIGURES.get(key, []):
            if d not in DATASETS:
                raise WorkflowError(f"config error: oltr_figures.{key}: no dataset named '{d}'")
    if len(OLTR_FIGURES.get("tsne_runs", [])) not in (0, 2):
        raise WorkflowError("config error: oltr_figures.tsne_runs: name two runs (plain, meta-embedding) or none")
    profiles = {
        config["datasets"][d]["curation"].get("profile", "exponential") == "pareto"
        for d in OLTR_FIGURES.get("longtail_datasets", [])
    }
    if len(profiles) > 1:
        raise WorkflowError(
            "config error: oltr_figures.longtail_datasets: mix pareto and other profiles (no common x axis)"
        )
    for d in OLTR_FIGURES.get("open_classes_datasets", []):
        if not config["datasets"][d]["curation"].get("open_classes"):
            raise WorkflowError(f"config error: oltr_figures.open_classes_datasets: '{d}' has no open_classes")


_oltr_check()


def oltr_threshold_of(dataset):
    """The dataset's open-set threshold (as the evaluate rule uses it)."""
    t = config["datasets"][dataset].get("open_threshold")
    return t if t is not None else config.get("open_threshold", 0.1)


def oltr_tsne_runs(dataset):
    """The two Fig. 3 runs when both are trained on this dataset, else none."""
    runs = OLTR_FIGURES.get("tsne_runs", [])
    return list(runs) if runs and all(r in runs_of(dataset) for r in runs) else []


def oltr_threshold_runs(dataset):
    return [r for r in OLTR_FIGURES.get("threshold_runs", []) if r in runs_of(dataset)]


def _oltr_items(datasets_key, runs_key):
    """(dataset, run, seed) of a cross-dataset figure: listed runs trained on listed datasets."""
    runs = OLTR_FIGURES.get(runs_key, ["plain", "oltr"])
    return [
        (d, r, s)
        for d in OLTR_FIGURES.get(datasets_key, [])
        for r in runs
        if r in runs_of(d)
        for s in SEEDS
    ]


def get_oltr_tsne_features(wildcards):
    return [
        f"results/features/{wildcards.dataset}/{r}/seed{wildcards.seed}.parquet"
        for r in oltr_tsne_runs(wildcards.dataset)
    ]


def get_oltr_tsne_runs(wildcards):
    return oltr_tsne_runs(wildcards.dataset)


def get_oltr_threshold_predictions(wildcards):
    return [
        f"results/predictions/{wildcards.dataset}/{r}/seed{s}.parquet"
        for r in oltr_threshold_runs(wildcards.dataset)
        for s in SEEDS
    ]


def get_oltr_threshold_run_seeds(wildcards):
    return [(r, s) for r in oltr_threshold_runs(wildcards.dataset) for s in SEEDS]


def get_oltr_dataset_threshold(wildcards):
    return oltr_threshold_of(wildcards.dataset)


def oltr_longtail_x():
    """(x per dataset, axis label, log scale): imbalance factor, or Pareto alpha for pareto profiles."""
    xs, pareto = {}, False
    for d in OLTR_FIGURES.get("longtail_datasets", []):
        cur = config["datasets"][d]["curation"]
        pareto = cur.get("profile", "exponential") == "pareto"
        xs[d] = cur.get("pareto_alpha", 6.0) if pareto else cur.get("imbalance_factor", 100)
    if pareto:
        return xs, "Pareto alpha (smaller = more imbalanced)", False
    return xs, "imbalance factor n_max / n_min", True


def get_oltr_figures(wildcards=None):
    """Every OLTR figure the config asks for (added to the default target via get_figures)."""
    out = []
    for d in DATASETS:
        if oltr_tsne_runs(d):
            out.append(f"results/figures/{d}/oltr_tsne_seed{SEEDS[0]}.png")
        if oltr_threshold_runs(d):
            out.append(f"results/figures/{d}/oltr_threshold_sweep.png")
    if _oltr_items("longtail_datasets", "longtail_runs"):
        out.append("results/figures/oltr/longtailness.png")
    if _oltr_items("open_classes_datasets", "open_classes_runs"):
        out.append("results/figures/oltr/open_classes.png")
    return out
