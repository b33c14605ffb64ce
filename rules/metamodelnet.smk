# MetaModelNet (NIPS'17) figures, from saved artefacts only: Fig. 4 model dynamics (model.pt + the
# run's cached train features: a few fresh few-shot models pushed through the trained chain) and
# Fig. 3 per-class gain over plain (per-class metrics parquet files). Never retrains.
# Which runs: longtail.targets.mmn_dynamics_runs / mmn_gain_runs.


rule mmn_dynamics:
    input:
        model="results/train/{dataset}/{run}/seed{seed}/model.pt",
        features="results/features/{dataset}/{run}/seed{seed}.parquet",
        counts="results/data/{dataset}/class_counts.parquet",
    output:
        png=report(
            "results/figures/{dataset}/mmn_dynamics_{run}_seed{seed}.png",
            category="MetaModelNet",
            caption="report/mmn_dynamics.rst",
        ),
        points="results/figures/{dataset}/mmn_dynamics_{run}_seed{seed}.parquet",
    log:
        "results/logs/mmn_dynamics/{dataset}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mmn_dynamics/{dataset}/{run}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/mmn_dynamics.py"


rule mmn_gain:
    input:
        per_class=get_mmn_gain_inputs,
    output:
        png=report(
            "results/figures/{dataset}/mmn_gain_seed{seed}.png",
            category="MetaModelNet",
            caption="report/mmn_gain.rst",
        ),
        table="results/figures/{dataset}/mmn_gain_seed{seed}.parquet",
    params:
        runs=get_mmn_gain_runs,
        base=targets.MMN_GAIN_BASE,
    log:
        "results/logs/mmn_gain/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/mmn_gain/{dataset}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"  # plots_mmn imports torch (MetaModelNet tensors)
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/mmn_gain.py"
