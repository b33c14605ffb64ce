# Figures, re-rendered from parquet only: `snakemake figures` never retrains.


rule tsne:
    input:
        features="results/features/{dataset}/{run}/seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/tsne_{run}_seed{seed}.png",
            category="Embeddings",
            caption="report/tsne.rst",
        ),
    params:
        tsne=config.get("tsne", {}),
    log:
        "results/logs/tsne/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/tsne/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/tsne.py"


rule figures:
    input:
        get_figures(),
    default_target: False
