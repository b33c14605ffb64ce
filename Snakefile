# Long-tailed (and open long-tailed) recognition, from curation to the papers' tables and figures.
from snakemake.utils import min_version

min_version("9.0")


# The default experiment, unless the user names their own with --configfile (a preset then
# replaces it instead of being merged into it).
if not config:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/curate.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/kt.smk"
include: "rules/oltr.smk"
include: "rules/mfm_common.smk"
include: "rules/mfm.smk"
include: "rules/metamodelnet.smk"
include: "rules/figures.smk"


# Seconds of pandas/matplotlib each: on a cluster they run on the submit host, not through sbatch.
localrules:
    all,
    figures,
    class_distribution,
    evaluate,
    table,
    summary,
    tsne,
    kt_attention,
    kt_embedding,
    mmn_gain,
    mfm_tsne,
    mfm_confusion,
    oltr_tsne,
    oltr_threshold_sweep,
    oltr_longtailness,
    oltr_open_classes,


rule all:
    input:
        get_final_outputs(),
    default_target: True
