"""Test-session set-up: Snakemake runs outside the SLURM tests see no SLURM client.

The SLURM plugin's import, which every Snakemake start does, runs `scontrol show config` when
`sinfo` is on PATH; where the client is installed but no controller runs (a CI machine between
SLURM tests) that blocks ~9 s per Snakemake start, and the suite starts Snakemake dozens of times.
So the session's PATH is a folder of links to everything on PATH but the SLURM client
(tools/hide_slurm.py), as on a workstation; tests/test_slurm.py restores the real one
(``REAL_PATH_VAR``) for its module.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "workflow"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hide_slurm import path_without_slurm  # noqa: E402
from smk_runs import REAL_PATH_VAR  # noqa: E402

_folder: Path | None = None


def pytest_configure(config) -> None:
    global _folder
    if REAL_PATH_VAR in os.environ:  # already set up (nested pytest)
        return
    _folder = Path(tempfile.mkdtemp(prefix="pytest-path-"))
    os.environ[REAL_PATH_VAR] = os.environ.get("PATH", "")
    os.environ["PATH"] = path_without_slurm(_folder, os.environ[REAL_PATH_VAR])


def pytest_unconfigure(config) -> None:
    if _folder is not None:
        os.environ["PATH"] = os.environ.pop(REAL_PATH_VAR)
        shutil.rmtree(_folder, ignore_errors=True)
