"""Corrupt and stale intermediate files, through the real workflow on a finished tiny run.

A truncated predictions parquet makes evaluate fail with one line naming the file and the command
that rebuilds it; that command, run as printed (plus the run's own options), rebuilds the file and
regenerates the tables. Files whose input changed behind Snakemake's back (content replaced, old
mtime kept, so no rerun is planned) are refused by the job that reads them: evaluate refuses
predictions computed from an earlier samples table, the table job metrics computed from earlier
predictions; each printed fix brings the results back in line.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

import pandas as pd
import pytest

from longtail.contracts import read_metrics, read_predictions
from longtail.io import write_parquet
from smk_runs import DATASET, METRICS, PREDICTIONS, run_smk, smoke_config, write_config

pytestmark = pytest.mark.slow
SAMPLES = f"results/data/{DATASET}/samples.parquet"
TABLES = [f"results/tables/{DATASET}.{ext}" for ext in ("md", "csv", "tex")] + ["results/tables/summary.parquet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Working directory and config of a finished run of the default target (tables included)."""
    root = tmp_path_factory.mktemp("corrupt")
    cfg = write_config(smoke_config(), root / "smoke.yaml")
    work = root / "work"
    proc = run_smk(work, cfg)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return work, cfg


def printed_fix(output: str, path: str, error: str) -> list[str]:
    """The one line that names ``path`` and the problem; returns the snakemake arguments it prints."""
    lines = {line.strip() for line in output.splitlines() if f"{error}: {path}: " in line}
    assert len(lines) == 1, output[-4000:]  # (the log is shown once by --show-failed-logs)
    line = lines.pop()
    m = re.search(r"`snakemake (.+?)`", line)
    assert m, line
    args = shlex.split(m.group(1))
    assert args == ["--cores", "all", "--forcerun", path], line
    return args


def mtimes(work: Path) -> dict[str, float]:
    return {t: (work / t).stat().st_mtime for t in TABLES}


def replace_keeping_mtime(path: Path, df: pd.DataFrame) -> None:
    """New content under the old timestamp: what a copy with ``cp -p`` or ``rsync -a`` leaves."""
    st = path.stat()
    write_parquet(df, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_truncated_predictions_named_and_the_printed_fix_rebuilds_the_tables(finished):
    work, cfg = finished
    before, times = {t: (work / t).read_bytes() for t in TABLES[:3]}, mtimes(work)
    pred = work / PREDICTIONS
    data = pred.read_bytes()
    pred.write_bytes(data[: len(data) // 2])

    proc = run_smk(work, cfg)
    assert proc.returncode != 0
    args = printed_fix(proc.stdout, PREDICTIONS, "UnreadableFileError")
    assert "unreadable" in proc.stdout

    fixed = run_smk(work, cfg, extra=args)
    assert fixed.returncode == 0, fixed.stdout[-4000:]
    for rule in ("train", "evaluate", "table", "summary"):  # the file (train writes it) and what follows
        assert re.search(rf"^{rule}\s+1$", fixed.stdout, re.MULTILINE), fixed.stdout[-3000:]
    read_predictions(pred)  # whole again, checksum and all
    assert stat.S_IMODE(pred.stat().st_mode) == 0o666 & ~current_umask()
    after = mtimes(work)
    assert all(after[t] > times[t] for t in TABLES), "the tables were not regenerated"
    # CPU training and inference with the same seed and threads: the same predictions, hence the same tables
    assert {t: (work / t).read_bytes() for t in TABLES[:3]} == before
    assert "Nothing to be done" in run_smk(work, cfg, extra=["-n"]).stdout


def test_stale_inputs_refused_by_the_job_that_reads_them(finished):
    work, cfg = finished
    # evaluate refuses predictions computed from an earlier samples table
    samples = pd.read_parquet(work / SAMPLES)
    samples.loc[samples.index[-1], "class_name"] += " (renamed)"
    replace_keeping_mtime(work / SAMPLES, samples)
    assert "Nothing to be done" in run_smk(work, cfg, extra=["-n"]).stdout  # mtimes: no rerun planned
    proc = run_smk(work, cfg, extra=["--forcerun", METRICS])
    assert proc.returncode != 0
    args = printed_fix(proc.stdout, PREDICTIONS, "StaleInputError")
    assert f"earlier {SAMPLES}" in proc.stdout
    fixed = run_smk(work, cfg, extra=args)
    assert fixed.returncode == 0, fixed.stdout[-4000:]
    read_predictions(work / PREDICTIONS)

    # the table refuses metrics computed from earlier predictions
    preds = pd.read_parquet(work / PREDICTIONS)
    preds["pred"] = preds["label"].clip(lower=0)  # every known sample right
    replace_keeping_mtime(work / PREDICTIONS, preds)
    proc = run_smk(work, cfg, extra=["--forcerun", TABLES[0]])
    assert proc.returncode != 0
    args = printed_fix(proc.stdout, METRICS, "StaleInputError")
    assert f"earlier {PREDICTIONS}" in proc.stdout
    fixed = run_smk(work, cfg, extra=args)
    assert fixed.returncode == 0, fixed.stdout[-4000:]
    m = read_metrics(work / METRICS)
    top1 = m[(m["split"] == "test") & (m["setting"] == "closed") & (m["group"] == "overall") & (m["metric"] == "top1")]
    assert top1["value"].tolist() == [1.0]  # computed from the new predictions
    assert pd.read_csv(work / TABLES[1])["Overall"].tolist() == [100.0]  # and so is the table


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
