"""Small helpers for the workflow's entry scripts (logging, config plumbing)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO


def log_to(path: str) -> TextIO:
    """Send stderr (tracebacks, tqdm) and logging of this job to the rule's log file."""
    fh = open(path, "w", buffering=1)
    sys.stderr = fh
    logging.basicConfig(stream=fh, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    return fh


def source_params(source_cfg: Any) -> tuple[str, dict]:
    """(source name, its options) from a dataset's ``source`` block."""
    cfg = dict(source_cfg)
    return cfg.pop("name"), cfg
