# MFM (issue 6): the modulator transfer edge across datasets, the modulation parameters of trained
# modulator networks, and the MFM figures (t-SNE of gamma / beta, confusion matrices).
# Figures are drawn from saved artefacts only (model.pt -> modulation parquet, predictions).


rule mfm_modulation:
    input:
        samples="results/data/{dataset}/samples.parquet",
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
    output:
        "results/mfm/{dataset}/{run}/seed{seed}.modulation.parquet",
    params:
        source=get_dataset_source,
        split=_mfm_settings().get("split", "test"),
        device=config.get("device", "auto"),
    log:
        "results/logs/mfm_modulation/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mfm_modulation/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=GPU_JOB,
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow_scripts/mfm_modulation.py"


rule mfm_tsne:
    input:
        modulation="results/mfm/{dataset}/{run}/seed{seed}.modulation.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/mfm_gamma_beta_{run}_seed{seed}.png",
            category="MFM",
            caption="report/mfm_tsne.rst",
        ),
    params:
        max_points=_mfm_settings().get("max_points", 1000),
        perplexity=_mfm_settings().get("perplexity", 30),
    log:
        "results/logs/mfm_tsne/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mfm_tsne/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/plot_mfm_tsne.py"


rule mfm_confusion:
    input:
        base=get_mfm_base_predictions,
        run="results/predictions/{dataset}/{run}/seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/mfm_confusion_{run}_seed{seed}.png",
            category="MFM",
            caption="report/mfm_confusion.rst",
        ),
    params:
        base=_mfm_settings().get("base", "plain"),
    log:
        "results/logs/mfm_confusion/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mfm_confusion/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/plot_mfm_confusion.py"


rule mfm_figures:
    input:
        get_mfm_figures(),
    default_target: False
