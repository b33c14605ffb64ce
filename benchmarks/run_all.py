"""Run every benchmark script in this folder (except this one), one after the other, print their
output and keep it: ``<out>/<script>.txt`` (default ``results/bench/``), whose first line names the
script, the commit and the machine, for ``tools/write_docs.py`` to put into docs/performance.md.
A script that exits non-zero after printing (stability.py when a run diverged or collapsed) keeps
its output, with the exit status in the first line; one that printed nothing leaves no file.
Exits non-zero if any of them fails.

The main job runs in a temporary folder that is kept until the end, so that the MetaModelNet bank
is measured on the features of the plain run that this same `make bench` trained (the ratio
depends on the features: on a fresh checkout the bank would otherwise fall back to synthetic ones).

    .venv/bin/python benchmarks/run_all.py [--out results/bench] [name-substring ...]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))
import provenance  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="run only the scripts whose name contains one of these")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "bench",
                    help="folder for the output files (default: results/bench)")
    args = ap.parse_args(argv)
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if args.names:
        scripts = [p for p in scripts if any(a in p.name for a in args.names)]
    args.out.mkdir(parents=True, exist_ok=True)
    where = f"commit {provenance.commit(HERE.parent)} · {provenance.machine()}"
    failed = []
    main_job = Path(tempfile.mkdtemp(prefix="bench-main-job-"))
    features = main_job / "results/features/glyph_lt/plain/seed0.parquet"
    try:
        for script in scripts:
            extra = {"main_job.py": ["--keep", str(main_job)],
                     "mmn_bank.py": ["--features", str(features)] if features.exists() else []}.get(script.name, [])
            print(f"==== {script.name} ====", flush=True)
            t0 = time.perf_counter()
            lines = []
            with subprocess.Popen([sys.executable, str(script), *extra], cwd=HERE.parent, text=True,
                                  stdout=subprocess.PIPE) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    print(line, end="", flush=True)
                    lines.append(line)
            rc = proc.returncode
            seconds = time.perf_counter() - t0
            print(f"==== {script.name}: exit {rc}, {seconds:.1f} s ====\n", flush=True)
            if rc:
                failed.append(script.name)
                if not lines:  # a crash before any output: nothing to keep
                    continue
            date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            status = f", exit {rc}" if rc else ""
            (args.out / f"{script.stem}.txt").write_text(
                f"# `benchmarks/{script.name}` ({seconds:.0f} s{status}), {where}, {date}\n" + "".join(lines))
    finally:
        shutil.rmtree(main_job, ignore_errors=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
