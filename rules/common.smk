# Config validation, wildcard constraints and the input functions every stage uses.
# Parse time stays cheap: no torch import and no data reads here.
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))
from longtail.config_check import ConfigError, check_config, schema_error_line  # noqa: E402

try:
    validate(config, schema="schemas/config.schema.yaml")
except WorkflowError as exc:  # one line naming the key instead of jsonschema's multi-line dump
    raise WorkflowError(f"config error: {schema_error_line(exc)}") from None
try:
    check_config(config)
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None

DATASETS = list(config["datasets"])


def _cuda_expected():
    """Whether torch jobs will run on a GPU: `device` in config, else an NVIDIA driver on this host
    (nvidia-smi on PATH; no torch import, to keep parsing fast)."""
    device = config.get("device", "auto")
    if device != "auto":
        return device == "cuda"
    return shutil.which("nvidia-smi") is not None


# Torch jobs (train, infer, ...) on CPU take one thread each and hold no GPU token, so a small
# machine runs as many of them side by side as it has cores: small nets on 28x28 images scale
# better over processes than over intra-op threads. On a GPU host each holds the `gpu` token
# (the workstation profile allows one at a time) and 2 threads feed it. Override per rule with
# --set-threads / --set-resources (profiles/slurm does).
GPU_JOB = 1 if _cuda_expected() else 0
TORCH_THREADS = 2 if GPU_JOB else 1
RUNS = config["runs"]
SEEDS = config["seeds"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    run="|".join(RUNS),
    seed=r"\d+",


def runs_of(dataset):
    """Runs trained on a dataset: its `runs` list, or every run."""
    return config["datasets"][dataset].get("runs") or list(RUNS)


def get_parent_model(wildcards):
    """The checkpoint a run starts from (`init_from`), on the same dataset and seed; none else."""
    parent = RUNS[wildcards.run].get("init_from")
    if parent is None:
        return get_modulator_source(wildcards)  # MFM transfer across datasets (rules/mfm.smk), else []
    return f"results/train/{wildcards.dataset}/{parent}/seed{wildcards.seed}/model.pt"


def get_parent_features(wildcards):
    """Cached embeddings of the run named by `init_from` (classifier-stage methods use them)."""
    parent = RUNS[wildcards.run].get("init_from")
    if parent is None:
        return []
    return f"results/features/{wildcards.dataset}/{parent}/seed{wildcards.seed}.parquet"


def get_open_threshold(wildcards):
    """A dataset's open-set threshold, else the global one."""
    ds = config["datasets"][wildcards.dataset]
    if ds.get("open_threshold") is not None:
        return ds["open_threshold"]
    return config.get("open_threshold", 0.1)


# Params lookups as plain dict reads: `lookup(dpath=..., within=config)` walks the whole config on
# every job, 13-22 % of the CPU of a 3,776-job dry run (benchmarks/dag.py).
def get_run_config(wildcards):
    """A run's config entry (method, params, init_from, ...)."""
    return RUNS[wildcards.run]


def get_dataset_config(wildcards):
    """A dataset's config entry (source, curation, ...)."""
    return config["datasets"][wildcards.dataset]


def get_dataset_source(wildcards):
    return config["datasets"][wildcards.dataset]["source"]


def get_dataset_description(wildcards):
    return config["datasets"][wildcards.dataset].get("description", "")


def get_paper_results(wildcards):
    """The paper's figures for a dataset's runs ({} when none)."""
    return config.get("paper_results", {}).get(wildcards.dataset, {})


def dataset_metrics(dataset):
    return expand(
        "results/metrics/{dataset}/{run}/seed{seed}.parquet",
        dataset=dataset,
        run=runs_of(dataset),
        seed=SEEDS,
    )


def get_dataset_metrics(wildcards):
    return dataset_metrics(wildcards.dataset)


def get_all_metrics(wildcards):
    return [p for d in DATASETS for p in dataset_metrics(d)]


def tsne_runs(dataset):
    return [r for r in config.get("tsne", {}).get("runs", []) if r in runs_of(dataset)]


def get_figures(wildcards=None):
    out = []
    for d in DATASETS:
        out.append(f"results/figures/{d}/class_distribution.png")
        out += [f"results/figures/{d}/tsne_{r}_seed{SEEDS[0]}.png" for r in tsne_runs(d)]
    out += get_mmn_figures()  # rules/metamodelnet.smk
    return out + get_kt_figures() + get_oltr_figures() + get_mfm_figures()  # rules/kt.smk, oltr.smk, mfm.smk


def get_tables(wildcards=None):
    out = [f"results/tables/{d}.{ext}" for d in DATASETS for ext in ("md", "csv", "tex")]
    return out + ["results/tables/summary.parquet"]


def get_final_outputs():
    return get_tables() + get_figures()
