# MFM figures, from saved artefacts only: the modulation parameters a trained modulator network
# gives each sample (model.pt -> parquet), their t-SNE (Figs. 5, 9) and confusion matrices beside
# the base run's (Fig. 3). Which runs: longtail.targets.mfm_figure_runs / mfm_confusion_runs
# (settings: `mfm_figures:`); the cross-dataset modulator edge is longtail.targets.parent_model.


rule mfm_modulation:
    input:
        samples="results/data/{dataset}/samples.parquet",
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
    output:
        "results/figures/{dataset}/mfm_modulation_{run}_seed{seed}.parquet",
    params:
        source=get_dataset_source,
        split=config_provider("mfm_figures", "split"),
        device=config_provider("device"),
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
        modulation="results/figures/{dataset}/mfm_modulation_{run}_seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        report(
            "results/figures/{dataset}/mfm_gamma_beta_{run}_seed{seed}.png",
            category="MFM",
            caption="report/mfm_tsne.rst",
        ),
    params:
        max_points=config_provider("mfm_figures", "max_points"),
        perplexity=config_provider("mfm_figures", "perplexity"),
    log:
        "results/logs/mfm_tsne/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mfm_tsne/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/mfm_tsne.py"


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
        base=config_provider("mfm_figures", "base"),
    log:
        "results/logs/mfm_confusion/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mfm_confusion/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/analysis.yaml"
    localrule: True
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/mfm_confusion.py"


rule mfm_figures:
    input:
        get_mfm_figures(),
    default_target: False
