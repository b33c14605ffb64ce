# Knowledge-transfer (KT, CVPR 2022) figures, drawn from a KT run's model.pt (its head keeps the
# prototypes, classifier weights, attention and KT classifiers) and cached features: never retrains.
# Which runs: longtail.targets.kt_figure_runs (settings: `kt_figures:`).


rule kt_embedding:
    input:
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
        features="results/features/{dataset}/{run}/seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/kt_embedding_{run}_seed{seed}.png",
            category="Knowledge transfer",
            caption="report/kt_embedding.rst",
        ),
    params:
        kt_figures=config_subset("kt_figures", "split", "class", "embedding", "perplexity"),
        few=config_provider("shots", "few"),
    log:
        "results/logs/kt_embedding/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/kt_embedding/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/kt_embedding.py"


rule kt_attention:
    input:
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/kt_attention_{run}_seed{seed}.png",
            category="Knowledge transfer",
            caption="report/kt_attention.rst",
        ),
    params:
        kt_figures=config_subset("kt_figures", "top"),
    log:
        "results/logs/kt_attention/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/kt_attention/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/kt_attention.py"
