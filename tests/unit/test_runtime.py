"""Entry-script helpers: a job's log ends with the CPU seconds the job used, its children's
included (Snakemake's benchmark files undersample long jobs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

JOB = """
import sys, time, subprocess
sys.path.insert(0, {scripts!r})
from longtail.runtime import log_to
log_to({log!r})
t = time.process_time()
while time.process_time() - t < 0.3:  # 0.3 CPU s in this process
    pass
# a child that burns 0.3 CPU s too, waited for
subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"],
               check=True)
"""


def test_log_ends_with_the_jobs_cpu_seconds_children_included(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    code = JOB.format(scripts=str(ROOT / "workflow_scripts"), log=str(log))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    last = log.read_text().strip().splitlines()[-1]
    m = re.search(r"INFO job CPU seconds: ([\d.]+)$", last)
    assert m, last
    assert float(m.group(1)) >= 0.6  # both busy loops, plus start-up
