"""The benchmark scripts run and print the figures docs/performance.md quotes (tiny settings: this checks
that they work and that what they compare agrees, not their timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark script (dag.py: several Snakemake dry runs)

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_mmn_bank_batched_path_matches_scikit_learn():
    out = run_script("mmn_bank.py", "--features", "synthetic", "--subsets", "2", "--blocks", "4", "--repeat", "1")
    assert re.search(r"bank: \d+ models", out), out
    agree = float(re.search(r"test predictions agreeing ([\d.]+) %", out).group(1))
    assert agree >= 99.0, out
    rel = float(re.search(r"max relative difference ([\d.e+-]+)", out).group(1))
    assert rel < 0.02, out
    assert float(re.search(r"speed-up: ([\d.]+)x wall", out).group(1)) > 0, out


def test_mmn_bank_rejects_a_missing_features_file(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/mmn_bank.py"), "--features",
                           str(tmp_path / "none.parquet")], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr.strip().splitlines()[-1]


def test_trainer_throughput_prints_its_ratios():
    out = run_script("trainer_throughput.py", "--rounds", "1")
    for label in ("bare", "PIL 0 workers", "PIL 2 workers"):
        m = re.search(rf"ratio ours / {label}\s+([\d.]+)", out)
        assert m and float(m.group(1)) > 0, out
    assert "restart per call" in out, out


def test_dag_benchmark_prints_ours_beside_snakemakes_floor():
    out = run_script("dag.py", "--configfile", "config.yaml")
    ours = re.search(r"snakemake -n --quiet rules.*?: (\d+) jobs, ([\d.]+) s wall", out)
    assert ours and int(ours.group(1)) >= 50, out
    for label in ("bare", "directives"):
        m = re.search(rf"synthetic -n --quiet rules, {label}\s*: (\d+) jobs, ([\d.]+) s wall.*ours / this = ([\d.]+)", out)
        assert m, out
        assert abs(int(m.group(1)) - int(ours.group(1))) <= 2, out  # the floor has as many jobs as ours
        assert float(m.group(3)) > 0, out
    assert re.search(r"snakemake --version .*: [\d.]+ s wall", out), out


def test_main_job_analysis_sums_rules_and_projects_seeds(tmp_path):
    """Per-rule sums and the projection, on benchmark files with hand-picked CPU seconds: one seed
    of two runs (train 10 + 20 s, evaluate 1 + 1 s) and a curation (5 s) and a table (1 s) that a
    run with more seeds does once. The log of train a ends with its CPU, 12 s, which wins over the
    benchmark file's sampled 10 s. Three seeds: 2 + 3 x 4 = 14 jobs, 6 + 3 x 34 = 108 CPU s,
    >= 54 s on 2 cores. Floor without overhead: (32 - 2 x 12) + 6 = 14 CPU s, >= 7 s."""
    bench = tmp_path / "results" / "benchmarks"
    for rel, cpu in [("train/ds/a/seed0.tsv", 10.0), ("train/ds/b/seed0.tsv", 20.0),
                     ("evaluate/ds/a/seed0.tsv", 1.0), ("evaluate/ds/b/seed0.tsv", 1.0),
                     ("curate/ds.tsv", 5.0), ("table/ds.tsv", 1.0)]:
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{cpu + 0.5}\t0:00:01\t1.0\t{cpu}\n")
    log = tmp_path / "results/logs/train/ds/a/seed0.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01 00:00:00,000 INFO training\n2026-01-01 00:00:09,000 INFO job CPU seconds: 12.00\n")
    out = run_script("main_job.py", "--analyse", str(tmp_path), "--project-seeds", "3", "--cores", "2")
    assert re.search(r"^train\s+2\s+31\.0\s+32\.0\s+16\.00$", out, re.MULTILINE), out
    assert re.search(r"^evaluate\s+2\s+3\.0\s+2\.0\s+1\.00$", out, re.MULTILINE), out
    assert "1 seed(s)" in out and "per seed: 34 CPU s" in out and "once per run: 6 CPU s" in out, out
    assert "projected for 3 seed(s): 14 jobs, 108 CPU s" in out, out
    assert "wall on 2 cores >= 54 s" in out, out
    # the floor: train 32 CPU s less 2 jobs x the cheapest train job (12 s), plus curate and table
    assert "overhead-free floor: train work 8 CPU s (train 32 - 2 jobs x 12.00 s" in out, out
    assert "= 14 CPU s; wall on 2 cores >= 7 s" in out, out


def test_main_job_analysis_rejects_a_folder_without_benchmarks(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/main_job.py"), "--analyse", str(tmp_path)],
                          cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert "results/benchmarks does not exist" in proc.stderr
