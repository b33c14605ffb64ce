# Long-tailed (and open long-tailed) recognition, from curation to the papers' tables and figures.
# What gets built is decided in workflow_scripts/longtail/targets.py; rules/common.smk binds it.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))
from longtail.snakefile import stop_gracefully_on_sigint  # noqa: E402


# The default experiment, found beside this file (so `-s` or `-d` from another folder finds it),
# unless config files are given (--configfile, a profile's configfile): a preset then replaces it
# instead of being merged into it. `--config key=value` alone overrides keys of config.yaml.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config.yaml")


# SIGINT (kill -INT, Ctrl-C) lets running jobs finish and count, as SIGTERM does.
stop_gracefully_on_sigint(workflow)


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
