# Curation: long-tailed, open-set splits of each dataset (samples + class counts), and the
# class-distribution figure.


rule curate:
    output:
        samples="results/data/{dataset}/samples.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    params:
        dataset=get_dataset_config,
        shots=config.get("shots", {}),
    log:
        "results/logs/curate/{dataset}.log",
    benchmark:
        "results/benchmarks/curate/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow_scripts/curate.py"


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
        shots=config.get("shots", {}),
    log:
        "results/logs/class_distribution/{dataset}.log",
    benchmark:
        "results/benchmarks/class_distribution/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/plot_class_distribution.py"
