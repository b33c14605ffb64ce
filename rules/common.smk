# Config validation and checks, the config getter, wildcard constraints and the input functions of
# every rule. What to build is decided in longtail.targets (torch-free, unit-tested); the functions
# here only bind it to the workflow's config and a job's wildcards. Parse time stays cheap: no
# torch import, no data reads, plain dict reads per job.
import shutil

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from longtail import targets  # importable: the Snakefile puts workflow_scripts on sys.path
from longtail.config_check import ConfigError, check_config, schema_error_line
from longtail.snakefile import ConfigFileError, check_config_files

# Empty config files and duplicate keys, which Snakemake's loader accepts silently.
try:
    check_config_files(workflow.configfiles)
except ConfigFileError as exc:
    raise WorkflowError(f"config error: {exc}") from None

# validate fills the schema's defaults into config: rules and scripts read every key plainly.
try:
    validate(config, schema="schemas/config.schema.yaml")
except WorkflowError as exc:  # one line naming the key instead of jsonschema's multi-line dump
    raise WorkflowError(f"config error: {schema_error_line(exc)}") from None
try:
    check_config(config)
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None


def config_provider(*keys, default=None):
    """The config value at ``keys`` (e.g. ``config_provider("shots", "few")``); a missing key is
    an error unless ``default`` is given, as the schema fills every default in."""
    return targets.get_config(config, *keys, default=default)


def config_subset(section, *keys):
    """``{key: config[section][key]}`` for the named keys only: a figure's params hold the settings
    it draws with, so editing another one (its `runs` list, say) does not redraw it."""
    return targets.config_subset(config, section, keys)


def _cuda_expected():
    """Whether torch jobs will run on a GPU: `device` in config, else an NVIDIA driver on this host
    (nvidia-smi on PATH; no torch import, to keep parsing fast)."""
    device = config_provider("device")
    if device != "auto":
        return device == "cuda"
    return shutil.which("nvidia-smi") is not None


# Torch jobs (train, and figure rules that run a model) on CPU take one thread each and hold no GPU token, so a small
# machine runs as many of them side by side as it has cores: small nets on 28x28 images scale
# better over processes than over intra-op threads. On a GPU host each holds the `gpu` token
# (the workstation profile allows one at a time) and 2 threads feed it. Override per rule with
# --set-threads / --set-resources (profiles/slurm does).
GPU_JOB = 1 if _cuda_expected() else 0
TORCH_THREADS = 2 if GPU_JOB else 1


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    run="|".join(config["runs"]),
    seed=r"\d+",


# ------------------------------------------------------------------------------ targets


def get_tables(wildcards=None):
    return targets.tables(config)


def get_figures(wildcards=None):
    return targets.figures(config)


def get_final_outputs(wildcards=None):
    return targets.final_outputs(config)


def get_mfm_figures(wildcards=None):
    return targets.mfm_figures(config)


# ------------------------------------------------------------------------------ config entries
# Plain dict reads: `lookup(dpath=..., within=config)` walks the whole config on every job, 13-22 %
# of the CPU of a 3,776-job dry run (benchmarks/dag.py). Params hold only what a job's outputs
# depend on (longtail.targets, "job params"): Snakemake reruns a job whose params changed, so a
# label in train's params would retrain.


def get_run_training(wildcards):
    """A run's method, params and init_from (not its label)."""
    return targets.run_training(config, wildcards.run)


def get_dataset_curation(wildcards):
    return targets.curation(config, wildcards.dataset)


def get_dataset_source(wildcards):
    return targets.data_source(config, wildcards.dataset)


def get_dataset_description(wildcards):
    return config["datasets"][wildcards.dataset]["description"]


def get_table_runs(wildcards):
    """The labels of the runs in a dataset's table, in config order."""
    return targets.table_runs(config, wildcards.dataset)


def get_shots(wildcards):
    return targets.shots(config, wildcards.dataset)


def get_open_threshold(wildcards):
    return targets.open_threshold(config, wildcards.dataset)


def get_paper_results(wildcards):
    """The paper's figures for a dataset's runs ({} when none)."""
    return config["paper_results"].get(wildcards.dataset, {})


# ------------------------------------------------------------------------------ train and evaluate


# One path or none: the scripts read input.parent as a single file.
def get_parent_model(wildcards):
    return targets.parent_model(config, wildcards.dataset, wildcards.run, wildcards.seed) or []


def get_parent_features(wildcards):
    return targets.parent_features(config, wildcards.dataset, wildcards.run, wildcards.seed) or []


def get_dataset_metrics(wildcards):
    return targets.dataset_metrics(config, wildcards.dataset)


def get_all_metrics(wildcards):
    return targets.all_metrics(config)


# ------------------------------------------------------------------------------ family figures


def get_mmn_gain_runs(wildcards):
    return targets.mmn_gain_runs(config, wildcards.dataset)


def get_mmn_gain_inputs(wildcards):
    return [
        f"results/metrics/{wildcards.dataset}/{r}/seed{wildcards.seed}.per_class.parquet"
        for r in targets.mmn_gain_runs(config, wildcards.dataset)
    ]


def get_mfm_base_predictions(wildcards):
    base = config["mfm_figures"]["base"]
    return f"results/predictions/{wildcards.dataset}/{base}/seed{wildcards.seed}.parquet"


def get_oltr_tsne_runs(wildcards):
    return targets.oltr_tsne_runs(config, wildcards.dataset)


def get_oltr_tsne_features(wildcards):
    return [
        f"results/features/{wildcards.dataset}/{r}/seed{wildcards.seed}.parquet"
        for r in targets.oltr_tsne_runs(config, wildcards.dataset)
    ]


def get_oltr_threshold_run_seeds(wildcards):
    return [(r, s) for r in targets.oltr_threshold_runs(config, wildcards.dataset) for s in config["seeds"]]


def get_oltr_threshold_predictions(wildcards):
    return [
        f"results/predictions/{wildcards.dataset}/{r}/seed{s}.parquet"
        for r, s in get_oltr_threshold_run_seeds(wildcards)
    ]


def get_oltr_longtail_metrics(wildcards):
    return [f"results/metrics/{d}/{r}/seed{s}.parquet" for d, r, s in targets.oltr_items(config, "longtailness")]


def get_oltr_longtail_x(wildcards):
    """Fig. 8a's x value per dataset."""
    return targets.oltr_longtail_axis(config)[0]


def get_oltr_longtail_x_label(wildcards):
    return targets.oltr_longtail_axis(config)[1]


def get_oltr_longtail_log_x(wildcards):
    return targets.oltr_longtail_axis(config)[2]


def get_oltr_open_classes_items(wildcards):
    return targets.oltr_items(config, "open_classes")


def get_oltr_open_classes_predictions(wildcards):
    return [f"results/predictions/{d}/{r}/seed{s}.parquet" for d, r, s in targets.oltr_items(config, "open_classes")]


def get_oltr_open_classes_datasets(wildcards):
    return config["oltr_figures"]["open_classes_datasets"]


def get_oltr_open_classes_samples(wildcards):
    return [f"results/data/{d}/samples.parquet" for d in get_oltr_open_classes_datasets(wildcards)]


def get_oltr_open_classes_thresholds(wildcards):
    return {d: targets.open_threshold(config, d) for d in get_oltr_open_classes_datasets(wildcards)}
