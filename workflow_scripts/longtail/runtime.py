"""Small helpers for the workflow's entry scripts (logging, config plumbing)."""

from __future__ import annotations

import atexit
import logging
import resource
import sys
from typing import Any, TextIO

CPU_LINE = "job CPU seconds:"  # the log's last line; benchmarks/main_job.py reads it


def cpu_seconds() -> float:
    """User + system CPU of this process since it started (interpreter start-up and imports
    included) and of its finished children (DataLoader and render workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _log_cpu() -> None:
    logging.getLogger("longtail").info("%s %.2f", CPU_LINE, cpu_seconds())


def log_to(path: str) -> TextIO:
    """Send stderr (tracebacks, tqdm) and logging of this job to the rule's log file, and end it
    with the job's CPU seconds: Snakemake's benchmark files sample a job's CPU every 30 s after
    its first 15 s, so they undercount long jobs by up to 30 s each."""
    fh = open(path, "w", buffering=1)
    sys.stderr = fh
    logging.basicConfig(stream=fh, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    atexit.register(_log_cpu)
    return fh


def source_params(source_cfg: Any) -> tuple[str, dict]:
    """(source name, its options) from a dataset's ``source`` block."""
    cfg = dict(source_cfg)
    return cfg.pop("name"), cfg
