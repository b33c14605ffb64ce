# Knowledge-transfer (KT, CVPR 2022) figures, drawn from a KT run's model.pt (its head keeps the
# prototypes, classifier weights, attention and KT classifiers) and cached features: never retrains.


include: "kt_common.smk"


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
        kt_figures=config.get("kt_figures", {}),
        few=config.get("shots", {}).get("few", 20),
    log:
        "results/logs/kt_embedding/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/kt_embedding/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_kt_embedding.py"


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
        kt_figures=config.get("kt_figures", {}),
    log:
        "results/logs/kt_attention/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/kt_attention/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/plot_kt_attention.py"
