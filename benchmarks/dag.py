"""Dry-run (`snakemake -n`) wall time of a paper-scale DAG: 6 datasets x 41 runs x 5 seeds.

Runs ``snakemake -n`` from a temporary working directory (``-d``), as a user would, with the
default config layered under ``benchmarks/configs/paper_scale.yaml`` (3,776 jobs), and prints the
job count, the wall seconds and the CPU seconds (user + system; unlike wall time they barely grow
when other processes share the machine) of the best of ``--repeat`` rounds, in two forms:

- ``-n --quiet rules``  job blocks not printed (as ``make dag``, which also drops the job table);
- ``-n``                every job block printed (what a user reading the plan waits for).

Target: <= 5 s for >= 600 jobs; ``--seeds 1`` gives 824 jobs.

Every Snakemake start imports all installed executor plugins to build its command line. The SLURM
plugin (requirements.txt) computes a help text at import time and, when ``sinfo`` is on PATH, runs
``scontrol show config`` to read MinJobAge. On a cluster's login node that answers in milliseconds;
on a machine with a SLURM client but no reachable controller it blocks until scontrol gives up
(seconds per start). Where a SLURM client is on PATH, the script therefore measures with a PATH that hides
the SLURM client commands (a temporary folder of links to everything else on PATH), i.e. as on a
workstation without SLURM, so that the numbers measure the workflow, not the host's SLURM set-up,
and then once more as is.

To say how much of the time is Snakemake's own, each round times, right after our dry run, two
synthetic workflows with the same number of jobs, as chains of three rules (train -> infer ->
evaluate) under one target rule: ``bare`` (output + ``shell:`` only: Snakemake's floor for that
many jobs) and ``directives`` (the same chains with the directives every rule of ours carries: log,
benchmark, conda, threads, resources, a params function and ``script:``). What ours costs beyond
the second comes from what the workflow adds: more files per job, input functions, the table and
figure rules.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dag.py [--repeat 1] [--seeds N] [--configfile A.yaml B.yaml]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from hide_slurm import path_without_slurm  # noqa: E402
SNAKEMAKE = Path(sys.executable).with_name("snakemake")  # the venv's, else the one on PATH
if not SNAKEMAKE.exists():
    SNAKEMAKE = Path(shutil.which("snakemake") or "snakemake")
DEFAULT_CONFIGS = [ROOT / "config" / "presets" / "fmnist_lt.yaml", ROOT / "benchmarks" / "configs" / "paper_scale.yaml"]
TARGET_S = 5.0


def slurm_probe_seconds() -> float | None:
    """Wall seconds of the `scontrol show config` call the SLURM plugin makes at import (its own
    10 s timeout), or None when it is skipped (no `sinfo` on PATH, as on a machine without SLURM)."""
    if shutil.which("sinfo") is None:
        return None
    t0 = time.perf_counter()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=10)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        pass
    return time.perf_counter() - t0


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: list[str], cwd: Path, path: str | None) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, wall seconds, CPU seconds) of one command, with ``path`` as PATH when given."""
    t0, c0 = time.perf_counter(), children_cpu()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=dict(os.environ, PATH=path) if path else None)
    return res, time.perf_counter() - t0, children_cpu() - c0


def timed_dry_run(cmd: list[str], cwd: Path, path: str | None) -> tuple[float, float, int | None]:
    """(wall seconds, CPU seconds, job count from the job-stats table) of one `snakemake -n` command;
    exits with Snakemake's stderr when it fails."""
    res, wall, cpu = timed(cmd, cwd, path)
    if res.returncode:
        sys.exit(f"{' '.join(cmd[:3])} ... -n failed ({res.returncode}):\n{res.stderr[-3000:]}")
    m = re.search(r"^total\s+(\d+)\s*$", res.stdout + res.stderr, flags=re.M)
    return wall, cpu, int(m.group(1)) if m else None


def dry_run(configs: list[Path], quiet: bool, seeds: int | None = None, path: str | None = None
            ) -> tuple[float, float, int | None]:
    """(wall seconds, CPU seconds, job count) of one `snakemake -n` in a fresh temporary working
    directory, with ``path`` as PATH when given. CPU seconds do not grow when other processes
    share the machine; wall seconds do."""
    with tempfile.TemporaryDirectory(prefix="dag-bench-") as work:  # its .snakemake/ goes too
        cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", work, "-n", "--cores", "1",
               "--configfile", *map(str, configs)]
        if seeds:  # one more config layer (--config would pass the seeds as strings)
            overlay = Path(work) / "seeds.yaml"
            overlay.write_text(f"seeds: {list(range(seeds))}\n")
            cmd.append(str(overlay))
        if quiet:
            cmd += ["--quiet", "rules"]  # job blocks hidden, the job-stats table stays
        return timed_dry_run(cmd, ROOT, path)


BARE_RULE = """
rule {name}:
    input: {input}
    output: "{name}/{{run}}.txt"
    shell: "touch {{output}}"
"""

DIRECTIVES_RULE = """
def {name}_params(wildcards):
    return {{"run": wildcards.run}}

rule {name}:
    input: {input}
    output: "{name}/{{run}}.txt"
    params: setting={name}_params
    log: "logs/{name}/{{run}}.log"
    benchmark: "benchmarks/{name}/{{run}}.tsv"
    conda: "env.yaml"
    threads: 1
    resources: gpu=0, mem_mb=2000, runtime=10
    script: "job.py"
"""


def write_synthetic(folder: Path, jobs: int, directives: bool) -> Path:
    """A Snakefile of ``jobs`` jobs: (jobs - 1) // 3 chains of three rules under one target rule."""
    runs = max(1, (jobs - 1) // 3)
    template = DIRECTIVES_RULE if directives else BARE_RULE
    rules, previous = [], "[]"
    for name in ("train", "infer", "evaluate"):
        rules.append(template.format(name=name, input=previous))
        previous = f'"{name}/{{run}}.txt"'
    text = f'rule all:\n    input: expand("evaluate/{{run}}.txt", run=range({runs}))\n' + "".join(rules)
    (folder / "Snakefile").write_text(text)
    (folder / "env.yaml").write_text("channels: [conda-forge]\ndependencies: [python=3.11]\n")
    (folder / "job.py").write_text("open(snakemake.output[0], 'w').close()\n")
    return folder / "Snakefile"


def synthetic_dry_run(jobs: int, directives: bool, path: str | None) -> tuple[float, float, int | None]:
    """(wall, CPU, job count) of `snakemake -n --quiet rules` on a synthetic workflow of ``jobs`` jobs."""
    with tempfile.TemporaryDirectory(prefix="dag-floor-") as work:
        snakefile = write_synthetic(Path(work), jobs, directives)
        cmd = [str(SNAKEMAKE), "-s", str(snakefile), "-d", work, "-n", "--cores", "1", "--quiet", "rules"]
        return timed_dry_run(cmd, Path(work), path)


def startup(path: str | None) -> tuple[float, float]:
    """(wall, CPU) of `snakemake --version`: interpreter start and the plugin imports, no workflow."""
    _, wall, cpu = timed([str(SNAKEMAKE), "--version"], ROOT, path)
    return wall, cpu


def best(runs: list[tuple[float, float, int | None]]) -> tuple[float, float, int | None]:
    """The lowest wall and the lowest CPU seconds of repeated runs, with their job count."""
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", nargs="+", type=Path, default=DEFAULT_CONFIGS,
                    help="config files, layered in order (default: config/presets/fmnist_lt.yaml + paper_scale.yaml)")
    ap.add_argument("--seeds", type=int, default=None, help="override the seeds with 0..N-1 (paper_scale has 5)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the best of each form is reported")
    args = ap.parse_args()

    print(f"snakemake -n: {' + '.join(p.name for p in args.configfile)}; "
          f"cpus {os.cpu_count()}, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    probe = slurm_probe_seconds()
    if probe is None:
        print("SLURM client: none on PATH (no sinfo), so the plugin's probe is skipped")
    else:
        print(f"SLURM client probe (`scontrol show config`, run by the SLURM plugin's import): {probe:.1f} s")
    with tempfile.TemporaryDirectory(prefix="dag-bench-path-") as bare:
        path = None if probe is None else path_without_slurm(Path(bare))
        tag = "" if probe is None else " [no SLURM client]"
        # Ours and the two floors interleaved, round by round, so that a change in the host's speed
        # during the benchmark (this shared machine drifts by 20-40 %) hits all three alike.
        ours, floors = [], {False: [], True: []}
        for _ in range(args.repeat):
            ours.append(dry_run(args.configfile, True, args.seeds, path))
            jobs = ours[-1][2] or 0
            for directives in (False, True):
                floors[directives].append(synthetic_dry_run(jobs, directives, path))
        wall, cpu, jobs = best(ours)
        print(f"snakemake -n --quiet rules{tag}: {jobs} jobs, {wall:.1f} s wall ({cpu:.1f} s CPU)"
              f"  (target <= {TARGET_S:g} s: {'met' if wall <= TARGET_S else 'missed'})")
        if jobs:
            print(f"    {1000 * cpu / jobs:.1f} ms CPU per job, startup and parse included")
        for directives in (False, True):
            f_wall, f_cpu, f_jobs = best(floors[directives])
            label = "directives" if directives else "bare      "
            print(f"synthetic -n --quiet rules, {label}: {f_jobs} jobs, {f_wall:.1f} s wall ({f_cpu:.1f} s CPU); "
                  f"ours / this = {wall / f_wall:.2f} wall, {cpu / f_cpu:.2f} CPU")
        s_wall, s_cpu = min(startup(path) for _ in range(args.repeat))
        print(f"snakemake --version (start-up, plugin imports): {s_wall:.1f} s wall ({s_cpu:.1f} s CPU)")
        wall, cpu, jobs = best([dry_run(args.configfile, False, args.seeds, path) for _ in range(args.repeat)])
        print(f"snakemake -n (every job printed){tag}: {jobs} jobs, {wall:.1f} s wall ({cpu:.1f} s CPU)")
        if probe is not None:
            wall, cpu, jobs = best([dry_run(args.configfile, True, args.seeds) for _ in range(args.repeat)])
            print(f"snakemake -n --quiet rules, with this host's SLURM client: {jobs} jobs, "
                  f"{wall:.1f} s wall ({cpu:.1f} s CPU)")


if __name__ == "__main__":
    main()
