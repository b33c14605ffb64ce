"""The workflow on a real one-node SLURM cluster (munge, slurmctld, slurmd, slurmdbd, 2 fake GPUs),
started by the project's tools/local-slurm/start-local-slurm.sh, through --workflow-profile
profiles/slurm.

One workflow run (the smoke config with 10 epochs, to have time to cancel training) proves:
jobs went through sbatch (sacct), table/figure rules ran locally, a training job cancelled with
``scancel`` mid-run was resubmitted by Snakemake's retry and resumed from its checkpoint, and the
predictions and metrics are identical to an uninterrupted local run on CPU.

Needs root and apt-get (CI runs as root); skipped elsewhere with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from smk_runs import (EPOCHS, METRICS, REAL_PATH_VAR, ROOT, TRAIN_DIR, TRAIN_LOG, env, fault_config, read_history,
                      read_predictions, reference_run, smk_cmd, wait_for, write_config)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TOOLS = ROOT / "tools" / "local-slurm"
SLURM_ENV = {"FAKE_GPUS": "2", "SLURM_ACCOUNTING": "1", "BASE": "/tmp/local-slurm"}


@pytest.fixture(scope="module")
def real_path():
    """The real PATH, SLURM client included, which tests/conftest.py hides from the other tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", os.environ.get(REAL_PATH_VAR, os.environ.get("PATH", "")))
        yield


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")


@pytest.fixture(scope="module")
def slurm_cluster(real_path):
    """A running local SLURM cluster with accounting; stopped afterwards if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (installs munge/slurm with apt, writes /etc/slurm)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("no apt-get to install SLURM (needs Debian/Ubuntu) and no SLURM installed")
    was_up = _cluster_up()
    t0 = time.monotonic()
    script_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | SLURM_ENV
    r = subprocess.run([str(TOOLS / "start-local-slurm.sh")], env=script_env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert r.returncode == 0, f"start-local-slurm.sh failed:\n{r.stdout[-3000:]}"
    print(f"cluster ready in {time.monotonic() - t0:.1f} s")
    yield
    if not was_up:
        subprocess.run([str(TOOLS / "stop-local-slurm.sh")], env={**os.environ, **SLURM_ENV},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def sacct_jobs(workdir: Path) -> pd.DataFrame:
    """Accounting records (allocations only) of the jobs whose working directory is ``workdir``."""
    r = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1days", "--format=JobID,State,WorkDir,AllocTRES"],
                       capture_output=True, text=True, check=True)
    rows = [ln.split("|") for ln in r.stdout.splitlines() if ln.strip()]
    df = pd.DataFrame(rows, columns=["jobid", "state", "workdir", "tres"])
    return df[df["workdir"] == str(workdir)]


def slurm_logs(workdir: Path, rule: str) -> dict[str, Path]:
    """{SLURM job id: its log} for a rule; the plugin names logs <jobid>.log under the rule's folder."""
    return {p.stem: p for p in (workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log")}


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    shared = tmp_path_factory.getbasetemp() / "smk_shared"
    shared.mkdir(exist_ok=True)
    ref = reference_run(shared)  # local, uninterrupted, same config
    root = tmp_path_factory.mktemp("slurm")
    cfg = write_config(fault_config(), root / "fault.yaml")
    work = root / "work"
    work.mkdir()
    cmd = smk_cmd(work, cfg, cores=None, extra=[  # SLURM schedules; --jobs comes from the profile
        "--workflow-profile", str(ROOT / "profiles" / "slurm"),
        "--slurm-init-seconds-before-status-checks", "2",  # test only: the default (20 s) suits real clusters
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",  # one machine, no NFS lag
    ])
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cancelled = None
    try:
        ckpt = work / TRAIN_DIR / "checkpoint.pt"
        wait_for(ckpt.exists, timeout=400, interval=0.1, what="the first checkpoint of the SLURM train job")
        running = wait_for(lambda: list(slurm_logs(work, "train")), timeout=30, what="the train job's SLURM log")
        cancelled = running[0]
        subprocess.run(["scancel", cancelled], check=True)  # a preempted / lost job
        out, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:  # the test failed midway: leave no jobs behind
            proc.kill()
            for rule in ("curate", "train"):
                for jobid in slurm_logs(work, rule):
                    subprocess.run(["scancel", jobid])
    elapsed = time.monotonic() - t0
    print(f"SLURM workflow run: {elapsed:.1f} s")
    return {"rc": proc.returncode, "out": out, "work": work, "ref": ref, "cancelled": cancelled,
            "elapsed": elapsed}


def test_workflow_succeeds_on_slurm(slurm_run: dict) -> None:
    assert slurm_run["rc"] == 0, slurm_run["out"][-5000:]
    work = slurm_run["work"]
    for ext in ("md", "csv", "tex"):
        assert (work / "results" / "tables" / f"fmnist_smoke.{ext}").is_file()
    assert (work / "results" / "figures" / "fmnist_smoke" / "class_distribution.png").is_file()


def test_jobs_went_through_sbatch(slurm_run: dict) -> None:
    work = slurm_run["work"]
    jobs = sacct_jobs(work)
    by_rule = {rule: slurm_logs(work, rule) for rule in ("curate", "train", "evaluate", "table", "summary")}
    # curate and train (twice: cancelled + retry) were submitted with sbatch ...
    for rule in ("curate", "train"):
        assert by_rule[rule], f"no SLURM job for rule {rule}"
        for jobid in by_rule[rule]:
            assert jobid in set(jobs["jobid"]), f"{rule} job {jobid} missing from sacct"
    assert len(by_rule["train"]) == 2
    # ... the GPU rules asked for a GPU (the profile's gpu: 1 -> --gpus=1) ...
    for rule in ("train",):
        for jobid in by_rule[rule]:
            tres = jobs.loc[jobs["jobid"] == jobid, "tres"].iloc[0]
            assert "gres/gpu=1" in tres, f"{rule} job {jobid} has no GPU: {tres}"
    # ... and the localrules never reached SLURM.
    for rule in ("evaluate", "table", "summary"):
        assert not by_rule[rule], f"localrule {rule} was submitted to SLURM"
    assert len(jobs) == 3, jobs  # curate, train x2 (inference is part of the train job)
    states = sorted(s.split()[0] for s in jobs["state"])  # "CANCELLED by 0" -> CANCELLED
    assert states == ["CANCELLED", "COMPLETED", "COMPLETED"], jobs


def test_cancelled_training_was_retried_and_resumed(slurm_run: dict) -> None:
    work, cancelled = slurm_run["work"], slurm_run["cancelled"]
    jobs = sacct_jobs(work)
    assert jobs.loc[jobs["jobid"] == cancelled, "state"].iloc[0].startswith("CANCELLED")
    retry = [j for j in slurm_logs(work, "train") if j != cancelled]
    assert len(retry) == 1 and int(retry[0]) > int(cancelled)
    log = (work / TRAIN_LOG).read_text()  # the retry's log
    m = re.search(r"resuming from \S+checkpoint\.pt after epoch (\d+)", log)
    assert m, f"the retried job started over instead of resuming:\n{log[-2000:]}"
    resumed_after = int(m.group(1))
    trained = [int(e) for e in re.findall(r"^epoch (\d+): loss", log, flags=re.M)]
    assert trained == list(range(resumed_after + 2, EPOCHS + 1)), "epochs before the cancel were recomputed"
    assert read_history(work)["epoch"].tolist() == list(range(1, EPOCHS + 1))


def test_outputs_equal_local_run(slurm_run: dict) -> None:
    work, ref = slurm_run["work"], slurm_run["ref"]
    pd.testing.assert_frame_equal(read_predictions(work), read_predictions(ref), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(work / METRICS), pd.read_parquet(ref / METRICS), check_exact=True)
    pd.testing.assert_frame_equal(read_history(work)[["epoch", "loss", "train_acc", "val_acc", "lr"]],
                                  read_history(ref)[["epoch", "loss", "train_acc", "val_acc", "lr"]], check_exact=True)
