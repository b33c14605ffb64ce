"""Run every benchmark script in this folder (except this one), one after the other, and print
their output. Exits non-zero if any of them fails.

    .venv/bin/python benchmarks/run_all.py [name-substring ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if argv:
        scripts = [p for p in scripts if any(a in p.name for a in argv)]
    failed = []
    for script in scripts:
        print(f"==== {script.name} ====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
        print(f"==== {script.name}: exit {rc}, {time.perf_counter() - t0:.1f} s ====\n", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
