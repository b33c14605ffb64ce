# Training of every run, and in the same job one inference pass of the trained model that writes
# both predictions and embeddings (features), so images go through the network once. Inference is
# part of the training job, not a job of its own: a separate job would start torch, load the
# source and the model again for every run and seed, which costs more than the inference itself
# on small data (docs/performance.md). The price: a `feature_dtype` change reruns training.


rule train:
    input:
        samples="results/data/{dataset}/samples.parquet",
        parent=get_parent_model,
        parent_features=get_parent_features,
    output:
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
        history="results/train/{dataset}/{run}/seed{seed}/history.parquet",
        config="results/train/{dataset}/{run}/seed{seed}/config.yaml",
        predictions="results/predictions/{dataset}/{run}/seed{seed}.parquet",
        features="results/features/{dataset}/{run}/seed{seed}.parquet",
    params:
        run=get_run_training,
        source=get_dataset_source,
        device=config_provider("device"),
        feature_dtype=config_provider("feature_dtype"),
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
