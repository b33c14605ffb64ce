"""The default main job end to end: `snakemake` on config.yaml from an empty working directory to
the HTML report, timed, then where the time went (Snakemake's per-job benchmark files summed per
rule: wall seconds and CPU seconds).

    .venv/bin/python benchmarks/main_job.py [--cores 2] [--configfile config.yaml] [--keep DIR]

Prints the wall time of the run and of the report, the job count, the per-rule table and the
ratio of summed job CPU time to (wall x cores), i.e. how busy the cores were.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMK = str(Path(sys.executable).with_name("snakemake"))


def per_rule(workdir: Path) -> dict[str, tuple[int, float, float]]:
    """{rule: (jobs, summed wall s, summed CPU s)} from results/benchmarks/<rule>/**.tsv."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rule = tsv.relative_to(workdir / "results" / "benchmarks").parts[0]
        acc = out[rule]
        acc[0] += 1
        acc[1] += float(row["s"])
        acc[2] += float(row["cpu_time"]) if row.get("cpu_time") not in (None, "", "NA") else 0.0
    return {k: (int(v[0]), v[1], v[2]) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    ap.add_argument("--keep", default=None, help="run in this directory and keep it (default: a temp dir)")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    base = [SMK, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", args.configfile]
    try:
        t0 = time.perf_counter()
        run = subprocess.run([*base, "--cores", str(args.cores), "--quiet", "all"], cwd=work)
        t_run = time.perf_counter() - t0
        if run.returncode:
            print(f"main job failed (exit {run.returncode})", file=sys.stderr)
            return run.returncode
        t1 = time.perf_counter()
        rep = subprocess.run([*base, "--report", str(work / "results" / "report.html")], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_rep = time.perf_counter() - t1
        rules = per_rule(work)
        jobs = sum(v[0] for v in rules.values())
        cpu = sum(v[2] for v in rules.values())
        print(f"{'rule':<24}{'jobs':>6}{'wall s':>10}{'cpu s':>10}")
        for name, (n, wall, c) in sorted(rules.items(), key=lambda kv: -kv[1][2]):
            print(f"{name:<24}{n:>6}{wall:>10.1f}{c:>10.1f}")
        print(f"jobs: {jobs}; summed job CPU {cpu:.0f} s; summed job wall {sum(v[1] for v in rules.values()):.0f} s")
        print(f"main job wall: {t_run:.1f} s ({t_run / 60:.2f} min) on {args.cores} cores; "
              f"report {t_rep:.1f} s (exit {rep.returncode}); total {(t_run + t_rep) / 60:.2f} min")
        print(f"core utilisation: summed job CPU / (wall x cores) = {cpu / (t_run * args.cores):.2f}")
        print(f"target <= 600 s: {'met' if t_run + t_rep <= 600 else 'MISSED'}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
