# Metrics from predictions (the single source of every number), then tables over seeds.
# Seconds of pandas each: on a cluster they run on the submit host (localrule), not through sbatch.


rule evaluate:
    input:
        predictions="results/predictions/{dataset}/{run}/seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
        history="results/train/{dataset}/{run}/seed{seed}/history.parquet",
    output:
        metrics="results/metrics/{dataset}/{run}/seed{seed}.parquet",
        per_class="results/metrics/{dataset}/{run}/seed{seed}.per_class.parquet",
    params:
        threshold=get_open_threshold,
    log:
        "results/logs/evaluate/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/evaluate.py"


rule table:
    input:
        metrics=get_dataset_metrics,
    output:
        md=report("results/tables/{dataset}.md", category="Tables", caption="report/table.rst"),
        csv="results/tables/{dataset}.csv",
        tex="results/tables/{dataset}.tex",
    params:
        runs=get_table_runs,
        paper=get_paper_results,
        description=get_dataset_description,
        shots=get_shots,
        threshold=get_open_threshold,
    log:
        "results/logs/table/{dataset}.log",
    benchmark:
        "results/benchmarks/table/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/table.py"


rule summary:
    input:
        metrics=get_all_metrics,
    output:
        "results/tables/summary.parquet",
    log:
        "results/logs/summary/summary.log",
    benchmark:
        "results/benchmarks/summary/summary.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/summary.py"
