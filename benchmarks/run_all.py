"""Run every benchmark script in this folder (except this one), one after the other, and print
their output. Exits non-zero if any of them fails.

The main job runs in a temporary folder that is kept until the end, so that the MetaModelNet bank
is measured on the features of the plain run that this same `make bench` trained (the ratio
depends on the features: on a fresh checkout the bank would otherwise fall back to synthetic ones).

    .venv/bin/python benchmarks/run_all.py [name-substring ...]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if argv:
        scripts = [p for p in scripts if any(a in p.name for a in argv)]
    failed = []
    main_job = Path(tempfile.mkdtemp(prefix="bench-main-job-"))
    features = main_job / "results/features/fmnist_lt/plain/seed0.parquet"
    try:
        for script in scripts:
            args = {"main_job.py": ["--keep", str(main_job)],
                    "mmn_bank.py": ["--features", str(features)] if features.exists() else []}.get(script.name, [])
            print(f"==== {script.name} ====", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, str(script), *args], cwd=HERE.parent).returncode
            print(f"==== {script.name}: exit {rc}, {time.perf_counter() - t0:.1f} s ====\n", flush=True)
            if rc:
                failed.append(script.name)
    finally:
        shutil.rmtree(main_job, ignore_errors=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
