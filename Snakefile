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
include: "rules/figures.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
