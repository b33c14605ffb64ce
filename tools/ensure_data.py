"""Make sure the embedded dataset (Fashion-MNIST) can be found; install Debian's package if not.

Run by `make setup`. With apt and root, installs `dataset-fashion-mnist`; otherwise prints how to
get the data (torchvision download with internet, or a folder in config) and exits non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
from longtail.sources import DataError, fashion_mnist_candidates, load_source  # noqa: E402


def found() -> bool:
    try:
        load_source("fashion_mnist", {})
        return True
    except DataError:
        return False


def main() -> int:
    if found():
        print("Fashion-MNIST: found")
        return 0
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("Fashion-MNIST not found; installing Debian's dataset-fashion-mnist ...")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if found():
            return 0
    where = ", ".join(str(p) for p in fashion_mnist_candidates({}))
    print(
        "Fashion-MNIST not found (looked in " + where + ").\n"
        "Get it one of these ways:\n"
        "  - as root on Debian/Ubuntu: apt-get install dataset-fashion-mnist\n"
        "  - with internet: set datasets.fmnist_lt.source.download: true in config.yaml\n"
        "  - set datasets.fmnist_lt.source.root to a folder holding the four IDX files",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
