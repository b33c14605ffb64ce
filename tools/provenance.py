"""Where a measurement comes from: the commit of a checkout and a one-line description of the host.

Used by ``benchmarks/run_all.py`` (header of every benchmark output file) and by
``tools/write_docs.py`` (the line under every generated table). Standard library only.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


def commit(path: str | Path = ".") -> str:
    """Short hash of the checkout holding ``path``, with ``+dirty`` when tracked files differ from
    it; ``unknown`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], text=True, capture_output=True,
                              check=True, timeout=30).stdout.strip()

    try:
        sha = git("rev-parse", "--short=7", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    return "RAM unknown"


def _gpus() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], text=True,
                             capture_output=True, check=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "GPU unknown"
    names = [n.strip() for n in out if n.strip()]
    return ", ".join(names) if names else "no GPU"


def machine() -> str:
    """E.g. ``x86_64 Intel(R) Xeon(R) Processor, 2 cores, 23 GiB RAM, no GPU, Linux 6.1``."""
    release = platform.release().split("-")[0]
    return (f"{platform.machine()} {_cpu_model()}, {os.cpu_count()} cores, {_memory_gib()}, {_gpus()}, "
            f"{platform.system()} {release}")
