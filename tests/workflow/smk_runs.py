"""Helpers shared by the end-to-end fault and SLURM tests: derived smoke configs, snakemake runs
in a temporary working directory, and one cached uninterrupted local reference run."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMK = str(Path(sys.executable).with_name("snakemake"))
REAL_PATH_VAR = "LONGTAIL_TESTS_REAL_PATH"  # the PATH before tests/conftest.py hid the SLURM client
SMOKE = ROOT / "tests" / "configs" / "smoke.yaml"
DATASET, RUN, SEED = "fmnist_smoke", "plain", 0
# Long enough that a job can be killed between its first checkpoint and its last epoch
# (an epoch of the smoke data takes ~0.3-1 s on one busy core).
EPOCHS = 10
PREDICTIONS = f"results/predictions/{DATASET}/{RUN}/seed{SEED}.parquet"
METRICS = f"results/metrics/{DATASET}/{RUN}/seed{SEED}.parquet"
TRAIN_DIR = f"results/train/{DATASET}/{RUN}/seed{SEED}"
TRAIN_LOG = f"results/logs/train/{DATASET}/{RUN}/seed{SEED}.log"


def smoke_config(**params) -> dict:
    """tests/configs/smoke.yaml with the plain run's params updated, no t-SNE (minutes on a busy CI
    core, and not what these tests are about)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg = copy.deepcopy(cfg)
    cfg["runs"][RUN]["params"] = {**cfg["runs"][RUN].get("params", {}), **params}
    cfg["tsne"] = {"runs": []}
    return cfg


def fault_config() -> dict:
    return smoke_config(epochs=EPOCHS, batch_size=32)


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def smk_cmd(workdir: Path, config: Path, targets: Sequence[str] = (), extra: Sequence[str] = (),
            cores: int | None = 2) -> list[str]:
    """2 cores, and 2 torch threads per train job as profiles/slurm gives them (CPU results
    depend on the number of torch threads, so every run compared here uses the same)."""
    cores_arg = ["--cores", str(cores)] if cores else []
    return [SMK, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
            *cores_arg, "--set-threads", "train=2", "--show-failed-logs", *extra, *targets]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_smk(workdir: Path, config: Path, targets: Sequence[str] = (), extra: Sequence[str] = (),
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run snakemake to completion; stdout and stderr together in ``.stdout``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(smk_cmd(workdir, config, targets, extra), cwd=workdir, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "") -> object:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_processes(parent_pid: int, needle: str) -> list[psutil.Process]:
    """Descendants of ``parent_pid`` whose command line contains ``needle``."""
    try:
        kids = psutil.Process(parent_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if any(needle in part for part in p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def kill_training_after_first_checkpoint(work: Path, config: Path, predictions: str = PREDICTIONS,
                                         train_dir: str = TRAIN_DIR) -> tuple[int, str]:
    """Start the workflow towards ``predictions``, SIGKILL the training job once the first epoch's
    checkpoint exists in ``train_dir`` (a power cut or the OOM killer: no cleanup runs), and
    return Snakemake's exit code and output."""
    proc = subprocess.Popen(smk_cmd(work, config, [predictions]), cwd=work, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for((work / train_dir / "checkpoint.pt").exists, timeout=300, what="the first checkpoint")
        trainers = wait_for(lambda: job_processes(proc.pid, "train.py"), timeout=30, what="the train job")
        for p in trainers:
            p.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


@lru_cache(maxsize=1)
def _reference(root: str) -> tuple[Path, str]:
    work = Path(root) / "reference"
    cfg = write_config(fault_config(), Path(root) / "fault.yaml")
    proc = run_smk(work, cfg, [PREDICTIONS, METRICS])
    return work, proc.stdout if proc.returncode else ""


def reference_run(tmp_root: Path) -> Path:
    """Working directory of one uninterrupted local run of :func:`fault_config` (predictions and
    metrics), shared by every test in the session."""
    work, failure = _reference(str(tmp_root))
    assert not failure, f"reference run failed:\n{failure[-4000:]}"
    return work


def read_predictions(workdir: Path) -> pd.DataFrame:
    return pd.read_parquet(workdir / PREDICTIONS)


def read_history(workdir: Path) -> pd.DataFrame:
    return pd.read_parquet(workdir / TRAIN_DIR / "history.parquet")


def smoke_workflow(workdir: Path, config: Path, targets: Sequence[str] = (), timeout: int = 1500) -> Path:
    """The real workflow on ``config`` in ``workdir`` (2 cores, one torch thread per job), as the
    per-method end-to-end fixtures run it; fails the test with the tail of Snakemake's output."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), "--cores", "2", *targets, "--quiet"]  # --quiet last: it takes values
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return workdir
