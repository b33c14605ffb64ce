# Long-tailed (and open long-tailed) recognition, from curation to the papers' tables and figures.
# What gets built is decided in workflow_scripts/longtail/targets.py; rules/common.smk binds it.
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
include: "rules/figures.smk"
include: "rules/kt.smk"
include: "rules/metamodelnet.smk"
include: "rules/mfm.smk"
include: "rules/oltr.smk"


rule all:
    input:
        get_final_outputs(),
    localrule: True
    default_target: True
