# Figures of every dataset, re-rendered from parquet only: `snakemake figures` never retrains.
# The paper families' figures are in their own files (kt, metamodelnet, mfm, oltr); every figure
# and the table it is drawn from land under results/figures/. Seconds of pandas / matplotlib
# each: on a cluster they run on the submit host (localrule), not through sbatch.


rule class_distribution:
    input:
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/class_distribution.png",
            category="Data",
            caption="report/class_distribution.rst",
        ),
    params:
        shots=get_shots,
    log:
        "results/logs/class_distribution/{dataset}.log",
    benchmark:
        "results/benchmarks/class_distribution/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/class_distribution.py"


# Reads the source's images, so it runs in the torch env (the analysis env has no image readers).
rule sample_grid:
    input:
        samples="results/data/{dataset}/samples.parquet",
    output:
        report(
            "results/figures/{dataset}/sample_grid.png",
            category="Data",
            caption="report/sample_grid.rst",
        ),
    params:
        source=get_dataset_source,
        per_class=4,
    log:
        "results/logs/sample_grid/{dataset}.log",
    benchmark:
        "results/benchmarks/sample_grid/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/sample_grid.py"


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
        tsne=config_subset("tsne", "max_points", "perplexity"),
    log:
        "results/logs/tsne/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/tsne/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/tsne.py"


rule figures:
    input:
        get_figures(),
    localrule: True
    default_target: False
