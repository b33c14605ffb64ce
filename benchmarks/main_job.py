"""The default main job end to end: `snakemake` on config.yaml from an empty working directory to
the HTML report, timed, then where the time went (Snakemake's per-job benchmark files summed per
rule: wall seconds and CPU seconds) and what the same config would take with more seeds.

    .venv/bin/python benchmarks/main_job.py [--cores 2] [--configfile config.yaml] [--seeds N]
                                            [--project-seeds 3] [--keep DIR]
    .venv/bin/python benchmarks/main_job.py --analyse DIR [--project-seeds 3] [--cores 2]

Prints the wall time of the run and of the report, the job count, the per-rule table (jobs, wall,
CPU, CPU per job), the CPU of Snakemake's own process (all CPU of the run minus the jobs'), and
the ratio of summed CPU to (wall x cores), i.e. how busy the cores were, and the floor no cut of
overhead can pass: the train jobs' CPU less each job's start-up (the cheapest train job's CPU),
plus the once-per-run rules, over the cores. ``--seeds N`` runs the
config with its first N seeds. The projection to ``--project-seeds`` seeds scales the per-seed
rules (train, evaluate: one job per run and seed) and Snakemake's per-job CPU by the number of
seeds and keeps the rest (curation, figures of the first seed, tables); its wall time is that CPU
over the cores, ideal (cores always busy) and at the measured core utilisation. CPU seconds, not
wall, are what carries over to a machine shared with other work.
``--analyse DIR`` prints the same tables for a finished run in DIR without running anything.
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
from longtail.runtime import CPU_LINE  # noqa: E402

SMK = str(Path(sys.executable).with_name("snakemake"))
PER_SEED_RULES = ("train", "infer", "evaluate")  # one job per run and seed (infer: older layouts)
TARGET_S = 600


def logged_cpu(log: Path) -> float | None:
    """The CPU seconds a job's log ends with (``longtail.runtime.log_to``), if it has them."""
    if not log.is_file():
        return None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if CPU_LINE in ln]
    return float(lines[-1].split(CPU_LINE)[1]) if lines else None


def job_cpus(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """{rule: [(wall s, CPU s) per job]} from results/benchmarks/<rule>/**.tsv, each job's CPU from
    the last line of its log (results/logs/<same path>.log) where it has one: Snakemake's own
    cpu_time samples every 30 s after a job's first 15 s, so it undercounts long jobs."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    bench = workdir / "results" / "benchmarks"
    for tsv in bench.rglob("*.tsv"):
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rel = tsv.relative_to(bench)
        cpu = logged_cpu(workdir / "results" / "logs" / rel.with_suffix(".log"))
        if cpu is None:
            cpu = float(row["cpu_time"]) if row.get("cpu_time") not in (None, "", "NA") else 0.0
        out[rel.parts[0]].append((float(row["s"]), cpu))
    return dict(out)


def per_rule(workdir: Path) -> dict[str, tuple[int, float, float]]:
    """{rule: (jobs, summed wall s, summed CPU s)} (see :func:`job_cpus`)."""
    return {k: (len(v), sum(w for w, _ in v), sum(c for _, c in v)) for k, v in job_cpus(workdir).items()}


def cheapest_job_cpu(workdir: Path, rule: str = "train") -> float | None:
    """The smallest CPU of one ``rule`` job: a post-hoc head's train job is little more than the
    process start, torch's import and the source's load, so this bounds that start-up."""
    cpus = [c for _, c in job_cpus(workdir).get(rule, [])]
    return min(cpus) if cpus else None


def projection(rules: dict[str, tuple[int, float, float]], seeds: int, to_seeds: int,
               own_cpu: float = 0.0) -> dict[str, float]:
    """CPU seconds of a run of ``to_seeds`` seeds from one of ``seeds``: the per-seed rules' CPU
    and jobs scaled by to_seeds / seeds, the other rules' kept, Snakemake's own CPU scaled by the
    job count. Returns per_seed_cpu (per-seed rules, one seed), fixed_cpu, own_per_job, jobs, cpu."""
    scale = to_seeds / seeds
    seed_jobs = sum(n for r, (n, _, _) in rules.items() if r in PER_SEED_RULES)
    seed_cpu = sum(c for r, (_, _, c) in rules.items() if r in PER_SEED_RULES)
    fixed_jobs = sum(n for r, (n, _, _) in rules.items() if r not in PER_SEED_RULES)
    fixed_cpu = sum(c for r, (_, _, c) in rules.items() if r not in PER_SEED_RULES)
    own_per_job = own_cpu / max(seed_jobs + fixed_jobs, 1)
    jobs = fixed_jobs + seed_jobs * scale
    return {"per_seed_cpu": seed_cpu / seeds, "fixed_cpu": fixed_cpu, "own_per_job": own_per_job,
            "jobs": jobs, "cpu": fixed_cpu + seed_cpu * scale + own_per_job * jobs}


def report(rules: dict[str, tuple[int, float, float]], *, seeds: int, to_seeds: int, cores: int,
           wall: float | None = None, total_cpu: float | None = None, startup: float | None = None) -> None:
    jobs = sum(v[0] for v in rules.values())
    cpu = sum(v[2] for v in rules.values())
    print(f"{'rule':<24}{'jobs':>6}{'wall s':>10}{'cpu s':>10}{'cpu s/job':>11}")
    for name, (n, w, c) in sorted(rules.items(), key=lambda kv: -kv[1][2]):
        print(f"{name:<24}{n:>6}{w:>10.1f}{c:>10.1f}{c / n:>11.2f}")
    print(f"jobs: {jobs}; summed job CPU {cpu:.0f} s; summed job wall {sum(v[1] for v in rules.values()):.0f} s")
    own = max(total_cpu - cpu, 0.0) if total_cpu is not None else 0.0
    if total_cpu is not None:
        print(f"all CPU of the run (jobs + Snakemake): {total_cpu:.0f} s; Snakemake's own process: {own:.0f} s "
              f"({own / max(jobs, 1):.2f} s per job)")
    if wall is not None:
        used = total_cpu if total_cpu is not None else cpu
        print(f"core utilisation: CPU / (wall x cores) = {used / (wall * cores):.2f}")
    p = projection(rules, seeds, to_seeds, own)
    print(f"per seed: {p['per_seed_cpu']:.0f} CPU s in {', '.join(r for r in PER_SEED_RULES if r in rules)}; "
          f"once per run: {p['fixed_cpu']:.0f} CPU s (curation, figures, tables)")
    ideal = p["cpu"] / cores
    line = (f"projected for {to_seeds} seed(s): {p['jobs']:.0f} jobs, {p['cpu']:.0f} CPU s = {p['fixed_cpu']:.0f} + "
            f"{to_seeds} x {p['per_seed_cpu']:.0f} + Snakemake {p['own_per_job']:.2f} s x {p['jobs']:.0f} jobs; "
            f"wall on {cores} cores >= {ideal:.0f} s ({ideal / 60:.1f} min)")
    if wall is not None and total_cpu:
        util = total_cpu / (wall * cores)
        line += f", at this run's utilisation {util:.2f}: {ideal / util:.0f} s ({ideal / util / 60:.1f} min)"
    print(line)
    print(f"projected target <= {TARGET_S} s: {'met' if ideal <= TARGET_S else 'MISSED'} (ideal packing)")
    if startup is not None and "train" in rules:
        # what no cut of overhead can go below: training's own work, and the once-per-run rules
        n_train, _, c_train = rules["train"]
        work = max(c_train - n_train * startup, 0.0)
        floor = (work + p["fixed_cpu"]) / cores
        print(f"overhead-free floor: train work {work:.0f} CPU s (train {c_train:.0f} - {n_train} jobs x {startup:.2f} s, "
              f"the cheapest train job) + once per run {p['fixed_cpu']:.0f} = {work + p['fixed_cpu']:.0f} CPU s; "
              f"wall on {cores} cores >= {floor:.0f} s ({floor / 60:.1f} min) with no start-up, no evaluate jobs "
              f"and no Snakemake: target <= {TARGET_S} s {'reachable' if floor <= TARGET_S else 'out of reach'} by cutting overhead")


def with_seeds(configfile: str, n: int, dest: Path) -> str:
    """A copy of ``configfile`` with its first ``n`` seeds."""
    cfg = yaml.safe_load(Path(configfile).read_text())
    cfg["seeds"] = list(cfg.get("seeds", [0]))[:n]
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(dest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    ap.add_argument("--seeds", type=int, default=None, help="run only the config's first N seeds")
    ap.add_argument("--project-seeds", type=int, default=3, help="project the run to this many seeds")
    ap.add_argument("--keep", default=None, help="run in this directory and keep it (default: a temp dir)")
    ap.add_argument("--analyse", default=None, help="print the tables of a finished run in this directory")
    args = ap.parse_args()

    if args.analyse:
        work = Path(args.analyse)
        if not (work / "results" / "benchmarks").is_dir():
            print(f"main_job: {work}/results/benchmarks does not exist: give the working directory of a run",
                  file=sys.stderr)
            return 2
        rules = per_rule(work)
        seeds = len({p.stem for p in (work / "results" / "benchmarks" / "train").rglob("seed*.tsv")}) or 1
        print(f"{work}: {seeds} seed(s)")
        report(rules, seeds=seeds, to_seeds=args.project_seeds, cores=args.cores, startup=cheapest_job_cpu(work))
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    configfile = args.configfile
    if args.seeds:
        configfile = with_seeds(configfile, args.seeds, work / "main_job_config.yaml")
    seeds = len(yaml.safe_load(Path(configfile).read_text()).get("seeds", [0]))
    base = [SMK, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", configfile]
    try:
        t0 = time.perf_counter()
        run = subprocess.run([*base, "--cores", str(args.cores), "--quiet", "all"], cwd=work)
        t_run = time.perf_counter() - t0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total_cpu = children.ru_utime + children.ru_stime  # Snakemake and every job it ran
        if run.returncode:
            print(f"main job failed (exit {run.returncode})", file=sys.stderr)
            return run.returncode
        t1 = time.perf_counter()
        rep = subprocess.run([*base, "--report", str(work / "results" / "report.html")], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_rep = time.perf_counter() - t1
        print(f"config: {args.configfile}, {seeds} seed(s)")
        report(per_rule(work), seeds=seeds, to_seeds=args.project_seeds, cores=args.cores, wall=t_run,
               total_cpu=total_cpu, startup=cheapest_job_cpu(work))
        print(f"main job wall: {t_run:.1f} s ({t_run / 60:.2f} min) on {args.cores} cores; "
              f"report {t_rep:.1f} s (exit {rep.returncode}); total {(t_run + t_rep) / 60:.2f} min")
        print(f"target <= {TARGET_S} s: {'met' if t_run + t_rep <= TARGET_S else 'MISSED'}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
