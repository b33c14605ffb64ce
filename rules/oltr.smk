# OLTR (CVPR 2019) analysis figures: Fig. 3 (t-SNE, head vs tail class), Fig. 8a (long-tailness),
# Fig. 8b (open-set threshold) and Fig. 8c (number of open classes). Everything is re-drawn from
# saved features, predictions and metrics: these rules never retrain. Settings: `oltr_figures:`.

include: "oltr_common.smk"


rule oltr_tsne:
    input:
        features=get_oltr_tsne_features,
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/oltr_tsne_seed{seed}.png",
            category="OLTR",
            caption="report/oltr_tsne.rst",
        ),
    params:
        runs=get_oltr_tsne_runs,
        oltr_figures=OLTR_FIGURES,
        tsne=config.get("tsne", {}),
    log:
        "results/logs/oltr_tsne/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/oltr_tsne/{dataset}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/plot_oltr_tsne.py"


rule oltr_threshold_sweep:
    input:
        predictions=get_oltr_threshold_predictions,
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        figure=report(
            "results/figures/{dataset}/oltr_threshold_sweep.png",
            category="OLTR",
            caption="report/oltr_threshold.rst",
        ),
        table="results/oltr/{dataset}/threshold_sweep.parquet",
    params:
        run_seeds=get_oltr_threshold_run_seeds,
        thresholds=OLTR_FIGURES.get("thresholds", []),
        threshold=get_oltr_dataset_threshold,
    log:
        "results/logs/oltr_threshold_sweep/{dataset}.log",
    benchmark:
        "results/benchmarks/oltr_threshold_sweep/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_oltr_threshold.py"


rule oltr_longtailness:
    input:
        metrics=[
            f"results/metrics/{d}/{r}/seed{s}.parquet"
            for d, r, s in _oltr_items("longtail_datasets", "longtail_runs")
        ],
    output:
        figure=report(
            "results/figures/oltr/longtailness.png",
            category="OLTR",
            caption="report/oltr_longtail.rst",
        ),
        table="results/oltr/longtailness.parquet",
    params:
        x_of=oltr_longtail_x()[0],
        x_label=oltr_longtail_x()[1],
        log_x=oltr_longtail_x()[2],
    log:
        "results/logs/oltr_longtailness/oltr_longtailness.log",
    benchmark:
        "results/benchmarks/oltr_longtailness/oltr_longtailness.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_oltr_longtail.py"


rule oltr_open_classes:
    input:
        predictions=[
            f"results/predictions/{d}/{r}/seed{s}.parquet"
            for d, r, s in _oltr_items("open_classes_datasets", "open_classes_runs")
        ],
        samples=[
            f"results/data/{d}/samples.parquet"
            for d in OLTR_FIGURES.get("open_classes_datasets", [])
        ],
    output:
        figure=report(
            "results/figures/oltr/open_classes.png",
            category="OLTR",
            caption="report/oltr_open_classes.rst",
        ),
        table="results/oltr/open_classes.parquet",
    params:
        run_items=_oltr_items("open_classes_datasets", "open_classes_runs"),
        datasets=OLTR_FIGURES.get("open_classes_datasets", []),
        thresholds={d: oltr_threshold_of(d) for d in OLTR_FIGURES.get("open_classes_datasets", [])},
    log:
        "results/logs/oltr_open_classes/oltr_open_classes.log",
    benchmark:
        "results/benchmarks/oltr_open_classes/oltr_open_classes.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_oltr_open_classes.py"
