"""What the workflow builds, as pure functions of the config.

``config`` is the dict Snakemake holds after ``validate`` (rules/common.smk): the JSON schema's
defaults are filled in, so nothing here repeats a default. Everything is torch-free and knows no
Snakemake object: rules/common.smk wraps these functions as input functions, and
tests/unit/test_targets.py calls them on plain dicts.

Contents: the config getter, what each job's params hold (only what its outputs depend on), the
parent edges between runs (``init_from``, MFM's cross-dataset ``modulator_from``), which runs each
paper family's figures take, the paths of every table and figure of the default target, and the
parse-time checks of the figure settings.

Every test of a run's method or parameters is one of the small predicates under "Which runs
belong to a family" below; figure selections and checks only call those.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .methods import make_config

Config = Mapping[str, Any]
Run = Mapping[str, Any]

# Per-class gain figure (MetaModelNet Fig. 3): the run every other run is compared with.
MMN_GAIN_BASE = "plain"
# Also drawn in that figure when trained (the paper compares over-sampling too).
MMN_GAIN_EXTRA = ("oversample",)


# ------------------------------------------------------------------------------ config access


def get_config(config: Config, *keys: str, default: Any = None) -> Any:
    """``config[k1][k2]...``: plain dict reads, cheap on every job of a large DAG.

    The schema fills every default in, so a missing key is a misspelt one: KeyError naming the
    dotted path, unless a ``default`` is given (for a value the schema leaves optional).
    """
    node: Any = config
    for i, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            if default is not None:
                return default
            raise KeyError(f"config has no key {'.'.join(keys[: i + 1])}")
        node = node[key]
    return node


def config_subset(config: Config, section: str, keys: Iterable[str]) -> dict:
    """``{key: config[section][key]}`` for ``keys``, in that order."""
    block = config[section]
    return {k: block[k] for k in keys}


def runs_of(config: Config, dataset: str) -> list[str]:
    """Runs trained on a dataset: its ``runs`` list, or every run."""
    return list(config["datasets"][dataset]["runs"] or config["runs"])


def first_seed(config: Config) -> int:
    """The seed single-seed figures are drawn for."""
    return config["seeds"][0]


def shots(config: Config, dataset: str) -> dict:
    """A dataset's shot groups: the global ``shots`` with the dataset's own keys over it."""
    return {**config["shots"], **(config["datasets"][dataset].get("shots") or {})}


def open_threshold(config: Config, dataset: str) -> float | dict:
    """A dataset's open-set threshold, else the global one: a number, or a rule such as
    ``{rule: val_tpr, tpr: 0.95}`` that ``metrics.resolve_threshold`` turns into one per run."""
    own = config["datasets"][dataset]["open_threshold"]
    return config["open_threshold"] if own is None else own


# ------------------------------------------------------------------------------ job params
# Snakemake reruns a job whose params changed (its default `params` rerun trigger), so each job's
# params hold only what its outputs depend on: a run's label or a dataset's description in train's
# or curate's params would retrain. Mappings are key-sorted, so reordering keys in the YAML reruns
# nothing either; lists keep their order (open_classes' order sets the labels, for one).


def canonical(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted."""
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def data_source(config: Config, dataset: str) -> dict:
    """A dataset's source block: where its images are read from (curate, train, infer)."""
    return canonical(config["datasets"][dataset]["source"])


def curation(config: Config, dataset: str) -> dict:
    """A dataset's curation block: how its splits are carved (curate)."""
    return canonical(config["datasets"][dataset]["curation"])


def run_training(config: Config, run: str) -> dict:
    """What a run's training depends on besides its data and seed: the method, its parameters
    (``modulator_from`` among them) and ``init_from``; not its label."""
    entry = config["runs"][run]
    return {"method": entry["method"], "params": canonical(entry["params"]), "init_from": entry["init_from"]}


def table_runs(config: Config, dataset: str) -> dict[str, dict[str, str]]:
    """``{run: {"label": ...}}`` of the runs trained on a dataset, in config order (its table's rows):
    only their labels, so a training edit elsewhere leaves the table alone."""
    trained = set(runs_of(config, dataset))
    return {r: {"label": entry["label"]} for r, entry in config["runs"].items() if r in trained}


# ------------------------------------------------------------------------------ which runs belong to a family
# Each predicate reads one run's config entry ({method, params, init_from, label}); the method's
# frozen config (make_config) supplies parameter defaults, so none is repeated here.


def method_config(run: Run) -> Any:
    """The run's frozen method config, defaults filled."""
    return make_config(run["method"], run["params"])


def is_kt(run: Run) -> bool:
    """A knowledge-transfer run: its head keeps prototypes, attention and KT classifiers."""
    return run["method"] == "kt"


def is_kt_transfer(run: Run) -> bool:
    """A KT run whose classifier transfers knowledge through attention (w_h, ensemble, continual),
    so its attention map (Appendix D) exists; prototypes alone have none."""
    return is_kt(run) and method_config(run).tau is not None


def is_metamodelnet(run: Run) -> bool:
    """A MetaModelNet run, any split (Table 2's rows, all in the per-class gain figure)."""
    return run["method"] == "metamodelnet"


def has_mmn_chain(run: Run) -> bool:
    """A MetaModelNet run with a chain of residual blocks (recursive or fixed split), whose model
    dynamics (Fig. 4) can be drawn; model regression has one MLP and no chain, and the classifier
    alone (``apply_metanet: false``) trains none."""
    if not is_metamodelnet(run):
        return False
    cfg = method_config(run)
    return cfg.apply_metanet and cfg.split in ("recur", "fix")


def modulator_from(run: Run) -> Mapping[str, str] | None:
    """``{dataset, run}`` whose frozen modulator network an MFM run trains with, else None."""
    return run["params"].get("modulator_from")


def learns_modulator(run: Run) -> bool:
    """An MFM run that learns its own modulator network (not per-sample phi, not a frozen one
    from ``modulator_from``): its gamma / beta can be drawn and transferred."""
    if run["method"] != "mfm" or modulator_from(run) is not None:
        return False
    return method_config(run).modulator == "net"


# ------------------------------------------------------------------------------ parent edges


def parent_model(config: Config, dataset: str, run: str, seed: int | str) -> str | None:
    """The checkpoint a run starts from: its ``init_from`` run's (same dataset and seed), else the
    ``modulator_from`` run's (its dataset, same seed), else None."""
    entry = config["runs"][run]
    if entry["init_from"] is not None:
        return f"results/train/{dataset}/{entry['init_from']}/seed{seed}/model.pt"
    src = modulator_from(entry)
    if src is not None:
        return f"results/train/{src['dataset']}/{src['run']}/seed{seed}/model.pt"
    return None


def parent_features(config: Config, dataset: str, run: str, seed: int | str) -> str | None:
    """Cached embeddings of the ``init_from`` run (classifier-stage methods train on them), else None."""
    parent = config["runs"][run]["init_from"]
    return None if parent is None else f"results/features/{dataset}/{parent}/seed{seed}.parquet"


# ------------------------------------------------------------------------------ per-family run selection


def tsne_runs(config: Config, dataset: str) -> list[str]:
    """Runs of ``tsne.runs`` trained on the dataset."""
    trained = runs_of(config, dataset)
    return [r for r in config["tsne"]["runs"] if r in trained]


def kt_figure_runs(config: Config, dataset: str) -> list[str]:
    """Runs of ``kt_figures.runs`` trained on the dataset."""
    trained = runs_of(config, dataset)
    return [r for r in config["kt_figures"]["runs"] if r in trained]


def mmn_runs(config: Config, dataset: str) -> list[str]:
    """MetaModelNet runs trained on the dataset."""
    return [r for r in runs_of(config, dataset) if is_metamodelnet(config["runs"][r])]


def mmn_dynamics_runs(config: Config, dataset: str) -> list[str]:
    """MetaModelNet runs with a chain of blocks trained on the dataset (Fig. 4 each)."""
    return [r for r in runs_of(config, dataset) if has_mmn_chain(config["runs"][r])]


def mmn_gain_runs(config: Config, dataset: str) -> list[str]:
    """Fig. 3's runs: the base, over-sampling (as the paper) when trained, every MetaModelNet run."""
    trained = runs_of(config, dataset)
    return [MMN_GAIN_BASE] + [r for r in MMN_GAIN_EXTRA if r in trained] + mmn_runs(config, dataset)


def mfm_figure_runs(config: Config, dataset: str) -> list[str]:
    """Runs whose gamma / beta get a t-SNE (Figs. 5, 9): those of ``mfm_figures.runs`` (null =
    all) that learn a modulator network and are trained on the dataset."""
    learned = [r for r in runs_of(config, dataset) if learns_modulator(config["runs"][r])]
    wanted = config["mfm_figures"]["runs"]
    return learned if wanted is None else [r for r in wanted if r in learned]


def mfm_confusion_runs(config: Config, dataset: str) -> list[str]:
    """Runs (any method) drawn beside the base run in confusion matrices (Fig. 3)."""
    wanted = config["mfm_figures"]["confusion_runs"]
    if wanted is None:
        wanted = mfm_figure_runs(config, dataset)
    trained = runs_of(config, dataset)
    return [r for r in wanted if r in trained]


def oltr_tsne_runs(config: Config, dataset: str) -> list[str]:
    """The two Fig. 3 runs when both are trained on the dataset, else none."""
    runs = config["oltr_figures"]["tsne_runs"]
    trained = runs_of(config, dataset)
    return list(runs) if runs and all(r in trained for r in runs) else []


def oltr_threshold_runs(config: Config, dataset: str) -> list[str]:
    """Runs of ``oltr_figures.threshold_runs`` trained on the dataset (Fig. 8b)."""
    trained = runs_of(config, dataset)
    return [r for r in config["oltr_figures"]["threshold_runs"] if r in trained]


# The two cross-dataset OLTR figures and their (datasets, runs) keys under oltr_figures.
OLTR_CROSS_DATASET = {
    "longtailness": ("longtail_datasets", "longtail_runs"),  # Fig. 8a
    "open_classes": ("open_classes_datasets", "open_classes_runs"),  # Fig. 8c
}


def oltr_items(config: Config, figure: str) -> list[tuple[str, str, int]]:
    """(dataset, run, seed) of a cross-dataset OLTR figure (``longtailness`` or ``open_classes``):
    its listed runs trained on its listed datasets, every seed."""
    datasets_key, runs_key = OLTR_CROSS_DATASET[figure]
    settings = config["oltr_figures"]
    return [
        (d, r, s)
        for d in settings[datasets_key]
        for r in settings[runs_key]
        if r in runs_of(config, d)
        for s in config["seeds"]
    ]


def oltr_longtail_axis(config: Config) -> tuple[dict[str, float], str, bool]:
    """Fig. 8a's x axis: (x per dataset, label, log scale): the imbalance factor, or Pareto
    alpha when the datasets use the pareto profile (checks refuse a mix)."""
    xs: dict[str, float] = {}
    pareto = False
    for d in config["oltr_figures"]["longtail_datasets"]:
        cur = config["datasets"][d]["curation"]
        pareto = cur["profile"] == "pareto"
        xs[d] = cur["pareto_alpha"] if pareto else cur["imbalance_factor"]
    if pareto:
        return xs, "Pareto alpha (smaller = more imbalanced)", False
    return xs, "imbalance factor n_max / n_min", True


# ------------------------------------------------------------------------------ outputs


def tables(config: Config) -> list[str]:
    """Every dataset's table (md, csv, tex) and the summary over all datasets."""
    out = [f"results/tables/{d}.{ext}" for d in config["datasets"] for ext in ("md", "csv", "tex")]
    return out + ["results/tables/summary.parquet"]


def dataset_metrics(config: Config, dataset: str) -> list[str]:
    """Metrics of every run and seed trained on a dataset (its table's input)."""
    return [
        f"results/metrics/{dataset}/{r}/seed{s}.parquet" for r in runs_of(config, dataset) for s in config["seeds"]
    ]


def all_metrics(config: Config) -> list[str]:
    return [p for d in config["datasets"] for p in dataset_metrics(config, d)]


def mmn_figures(config: Config) -> list[str]:
    """Fig. 4 of every chain run, and Fig. 3 of every dataset with the base and a MetaModelNet run."""
    seed, out = first_seed(config), []
    for d in config["datasets"]:
        out += [f"results/figures/{d}/mmn_dynamics_{r}_seed{seed}.png" for r in mmn_dynamics_runs(config, d)]
        if MMN_GAIN_BASE in runs_of(config, d) and mmn_runs(config, d):
            out.append(f"results/figures/{d}/mmn_gain_seed{seed}.png")
    return out


def kt_figures(config: Config) -> list[str]:
    """Fig. 6 embedding and Appendix D attention heat map of every ``kt_figures`` run."""
    seed = first_seed(config)
    return [
        f"results/figures/{d}/kt_{kind}_{r}_seed{seed}.png"
        for d in config["datasets"]
        for r in kt_figure_runs(config, d)
        for kind in ("embedding", "attention")
    ]


def oltr_figures(config: Config) -> list[str]:
    """Every OLTR figure the ``oltr_figures`` settings ask for."""
    seed, out = first_seed(config), []
    for d in config["datasets"]:
        if oltr_tsne_runs(config, d):
            out.append(f"results/figures/{d}/oltr_tsne_seed{seed}.png")
        if oltr_threshold_runs(config, d):
            out.append(f"results/figures/{d}/oltr_threshold_sweep.png")
    out += [f"results/figures/oltr/{figure}.png" for figure in OLTR_CROSS_DATASET if oltr_items(config, figure)]
    return out


def mfm_figures(config: Config) -> list[str]:
    """t-SNE of gamma / beta of the ``mfm_figures`` runs, and their confusion matrices beside the
    base run's where the base run is trained."""
    seed, base, out = first_seed(config), config["mfm_figures"]["base"], []
    for d in config["datasets"]:
        out += [f"results/figures/{d}/mfm_gamma_beta_{r}_seed{seed}.png" for r in mfm_figure_runs(config, d)]
        if base in runs_of(config, d):
            out += [f"results/figures/{d}/mfm_confusion_{r}_seed{seed}.png" for r in mfm_confusion_runs(config, d)]
    return out


def figures(config: Config) -> list[str]:
    """Every figure of the default target."""
    seed, out = first_seed(config), []
    for d in config["datasets"]:
        out += [f"results/figures/{d}/class_distribution.png", f"results/figures/{d}/sample_grid.png"]
        out += [f"results/figures/{d}/tsne_{r}_seed{seed}.png" for r in tsne_runs(config, d)]
    return out + mmn_figures(config) + kt_figures(config) + oltr_figures(config) + mfm_figures(config)


def final_outputs(config: Config) -> list[str]:
    """The default target: every table and figure."""
    return tables(config) + figures(config)


# ------------------------------------------------------------------------------ checks


def check_targets(config: Config) -> None:
    """Parse-time checks of the figure settings and of ``modulator_from``: ValueError with one line
    naming the key (config_check.check_config runs these after its own)."""
    check_kt_figures(config)
    check_mfm_figures(config)
    check_modulator_sources(config)
    check_oltr_figures(config)


def check_kt_figures(config: Config) -> None:
    for r in config["kt_figures"]["runs"]:
        if r not in config["runs"] or not is_kt_transfer(config["runs"][r]):
            raise ValueError(f"kt_figures.runs: '{r}' is not a kt run with an attention classifier "
                             "(classifier: wh, ensemble or continual)")


def check_mfm_figures(config: Config) -> None:
    # `base` is not checked: its default names a run a config may not have (then no Fig. 3)
    settings = config["mfm_figures"]
    for key in ("runs", "confusion_runs"):
        for r in settings[key] or []:
            if r not in config["runs"]:
                raise ValueError(f"mfm_figures.{key}: no run named '{r}'")
    for r in settings["runs"] or []:
        if not learns_modulator(config["runs"][r]):
            raise ValueError(f"mfm_figures.runs: '{r}' learns no modulator network (method mfm, "
                             "modulator net, no modulator_from)")


def check_modulator_sources(config: Config) -> None:
    """Each ``modulator_from`` names an existing dataset and an MFM run that learns its own
    modulator and is trained on that dataset (the method's dataclass checks the shape)."""
    runs = config["runs"]
    for name, run in runs.items():
        src = modulator_from(run)
        if src is None:
            continue
        key = f"runs.{name}.params.modulator_from"
        if run["init_from"] is not None:
            raise ValueError(f"{key}: set either init_from or modulator_from, not both")
        if src["dataset"] not in config["datasets"]:
            raise ValueError(f"{key}.dataset: no dataset named '{src['dataset']}'")
        if src["run"] not in runs:
            raise ValueError(f"{key}.run: no run named '{src['run']}'")
        if not learns_modulator(runs[src["run"]]):
            raise ValueError(f"{key}.run: '{src['run']}' must be an mfm run that learns its own modulator "
                             "(method mfm, modulator net, no modulator_from)")
        if src["run"] not in runs_of(config, src["dataset"]):
            raise ValueError(f"{key}: run '{src['run']}' is not trained on dataset '{src['dataset']}'; "
                             f"add it to datasets.{src['dataset']}.runs")


def check_oltr_figures(config: Config) -> None:
    settings, datasets = config["oltr_figures"], config["datasets"]
    run_keys = ["tsne_runs", "threshold_runs"]
    # a cross-dataset figure's runs only matter when it names datasets
    run_keys += [runs_key for datasets_key, runs_key in OLTR_CROSS_DATASET.values() if settings[datasets_key]]
    for key in run_keys:
        for r in settings[key]:
            if r not in config["runs"]:
                raise ValueError(f"oltr_figures.{key}: no run named '{r}'")
    for datasets_key, _ in OLTR_CROSS_DATASET.values():
        for d in settings[datasets_key]:
            if d not in datasets:
                raise ValueError(f"oltr_figures.{datasets_key}: no dataset named '{d}'")
    if len(settings["tsne_runs"]) not in (0, 2):
        raise ValueError("oltr_figures.tsne_runs: name two runs (plain, meta-embedding) or none")
    if len({datasets[d]["curation"]["profile"] == "pareto" for d in settings["longtail_datasets"]}) > 1:
        raise ValueError("oltr_figures.longtail_datasets: mix pareto and other profiles (no common x axis)")
    for d in settings["open_classes_datasets"]:
        if not datasets[d]["curation"]["open_classes"]:
            raise ValueError(f"oltr_figures.open_classes_datasets: '{d}' has no open_classes")
