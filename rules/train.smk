# Training of every run, then one inference pass per run that writes both predictions and
# embeddings (features), so images go through the network once.


rule train:
    input:
        samples="results/data/{dataset}/samples.parquet",
        parent=get_parent_model,
        parent_features=get_parent_features,
    output:
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
        history="results/train/{dataset}/{run}/seed{seed}/history.parquet",
        config="results/train/{dataset}/{run}/seed{seed}/config.yaml",
    params:
        run=get_run_training,
        source=get_dataset_source,
        device=config_provider("device"),
    log:
        "results/logs/train/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=GPU_JOB,
        mem_mb=8000,
        runtime=240,
    script:
        "../workflow_scripts/train.py"


rule infer:
    input:
        samples="results/data/{dataset}/samples.parquet",
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
    output:
        predictions="results/predictions/{dataset}/{run}/seed{seed}.parquet",
        features="results/features/{dataset}/{run}/seed{seed}.parquet",
    params:
        source=get_dataset_source,
        device=config_provider("device"),
        feature_dtype=config_provider("feature_dtype"),
    log:
        "results/logs/infer/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/infer/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=GPU_JOB,
        mem_mb=8000,
        runtime=60,
    script:
        "../workflow_scripts/infer.py"
