# Curation: the long-tailed, open-set splits of each dataset (samples + class counts).


rule curate:
    output:
        samples="results/data/{dataset}/samples.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    params:
        source=get_dataset_source,
        curation=get_dataset_curation,
        shots=get_shots,  # the shot group of each class is in the tables written
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
