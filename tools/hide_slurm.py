"""A PATH without the SLURM client, for Snakemake runs that must not see one.

Every Snakemake start imports all installed executor plugins to build its command line, and the
SLURM plugin's import runs `scontrol show config` when `sinfo` is on PATH. Where a SLURM client is
installed but no controller answers (a test machine between SLURM tests), that call blocks until
scontrol gives up, seconds at every Snakemake start. The test session and `benchmarks/dag.py` run
Snakemake with this PATH instead, as on a workstation without SLURM.
"""

from __future__ import annotations

import os
from pathlib import Path

SLURM_COMMANDS = frozenset({"sinfo", "scontrol", "sacct", "squeue", "sbatch", "srun", "salloc", "scancel",
                            "sacctmgr", "sstat"})


def path_without_slurm(folder: Path, path: str | None = None) -> str:
    """Fill ``folder`` with links to every executable on ``path`` (default: $PATH) except the SLURM
    client's commands, first one of each name winning as on PATH; returns ``folder`` as a PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = folder / name
            if name in SLURM_COMMANDS or link.is_symlink() or link.exists():
                continue
            target = Path(d) / name
            if target.is_file() and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(folder)
