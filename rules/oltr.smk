# OLTR (CVPR 2019) analysis figures: Fig. 3 (t-SNE, head vs tail class), Fig. 8a (long-tailness),
# Fig. 8b (open-set threshold) and Fig. 8c (number of open classes). Everything is re-drawn from
# saved features, predictions and metrics: these rules never retrain. Which runs and datasets:
# longtail.targets.oltr_* (settings: `oltr_figures:`).


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
        oltr_figures=config_subset("oltr_figures", "head_class", "tail_class"),
        tsne=config_subset("tsne", "max_points", "perplexity"),
    log:
        "results/logs/oltr_tsne/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/oltr_tsne/{dataset}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/oltr_tsne.py"


rule oltr_threshold_sweep:
    input:
        predictions=get_oltr_threshold_predictions,
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        figure=report(
            "results/figures/{dataset}/oltr_threshold_sweep.png",
            category="OLTR",
            caption="report/oltr_threshold_sweep.rst",
        ),
        table="results/figures/{dataset}/oltr_threshold_sweep.parquet",
    params:
        run_seeds=get_oltr_threshold_run_seeds,
        thresholds=config_provider("oltr_figures", "thresholds"),
        threshold=get_open_threshold,
    log:
        "results/logs/oltr_threshold_sweep/{dataset}.log",
    benchmark:
        "results/benchmarks/oltr_threshold_sweep/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/oltr_threshold_sweep.py"


rule oltr_longtailness:
    input:
        metrics=get_oltr_longtail_metrics,
    output:
        figure=report(
            "results/figures/oltr/longtailness.png",
            category="OLTR",
            caption="report/oltr_longtailness.rst",
        ),
        table="results/figures/oltr/longtailness.parquet",
    params:
        x_of=get_oltr_longtail_x,
        x_label=get_oltr_longtail_x_label,
        log_x=get_oltr_longtail_log_x,
    log:
        "results/logs/oltr_longtailness/oltr_longtailness.log",
    benchmark:
        "results/benchmarks/oltr_longtailness/oltr_longtailness.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/oltr_longtailness.py"


rule oltr_open_classes:
    input:
        predictions=get_oltr_open_classes_predictions,
        samples=get_oltr_open_classes_samples,
    output:
        figure=report(
            "results/figures/oltr/open_classes.png",
            category="OLTR",
            caption="report/oltr_open_classes.rst",
        ),
        table="results/figures/oltr/open_classes.parquet",
    params:
        run_items=get_oltr_open_classes_items,
        datasets=get_oltr_open_classes_datasets,
        thresholds=get_oltr_open_classes_thresholds,
    log:
        "results/logs/oltr_open_classes/oltr_open_classes.log",
    benchmark:
        "results/benchmarks/oltr_open_classes/oltr_open_classes.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/oltr_open_classes.py"
