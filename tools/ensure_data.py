"""Make sure the embedded datasets can be found; install Debian's packages if not.

Run by `make setup`. Fashion-MNIST: a config source with its own `root` is checked there (only
there, as the workflow reads it; a relative root from this repository's folder, where `make` runs
Snakemake); for the others, with apt and root, installs `dataset-fashion-mnist`; otherwise prints
how to get the data (torchvision download with internet, or a folder in config). Glyphs:
the pinned font packages of the `glyphs` source (its defaults, plus any `packages` a config's
glyphs source lists), installed with apt when missing. Exits non-zero when something is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
from longtail.glyphs import DEFAULT_PACKAGES, missing_packages  # noqa: E402
from longtail.sources import DataError, fashion_mnist_candidates, load_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def found() -> bool:
    try:
        load_source("fashion_mnist", {})
        return True
    except DataError:
        return False


def can_apt() -> bool:
    return bool(shutil.which("apt-get")) and os.geteuid() == 0


def apt_install(packages: list[str]) -> None:
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def config_sources(name: str) -> list[dict]:
    """The ``source`` blocks called ``name`` in config.yaml and the presets."""
    import yaml

    blocks = []
    for path in [ROOT / "config.yaml", *sorted((ROOT / "config" / "presets").glob("*.yaml"))]:
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for ds in (cfg.get("datasets") or {}).values():
            src = (ds or {}).get("source") or {}
            if src.get("name") == name:
                blocks.append(dict(src))
    return blocks


def glyph_packages() -> list[str]:
    """The glyphs source's default packages and those its config blocks list (config.yaml, presets)."""
    packages = list(DEFAULT_PACKAGES)
    for src in config_sources("glyphs"):
        packages += [str(p) for p in src.get("packages") or []]
    return list(dict.fromkeys(packages))


def ensure_fonts() -> int:
    packages = glyph_packages()
    missing = missing_packages(packages)
    if not missing:
        print(f"Glyph font packages: found ({len(packages)})")
        return 0
    if can_apt():
        print(f"Glyph font packages missing; installing {' '.join(missing)} ...")
        apt_install(missing)
        missing = missing_packages(packages)
        if not missing:
            return 0
    print(
        f"Font packages of the glyphs source not installed: {' '.join(missing)}.\n"
        "Get them one of these ways:\n"
        f"  - as root on Debian/Ubuntu: apt-get install {' '.join(missing)}\n"
        "  - list installed font packages in the glyphs source's `packages` option instead",
        file=sys.stderr,
    )
    return 1


def check_roots() -> tuple[int, bool]:
    """(exit status of the Fashion-MNIST sources with a root, whether any source has none)."""
    status, rootless = 0, False
    os.chdir(ROOT)  # a relative root is relative to where `make` runs Snakemake
    for src in config_sources("fashion_mnist"):
        if src.get("root") is None:
            rootless = True
            continue
        try:
            load_source("fashion_mnist", {k: v for k, v in src.items() if k != "name"})
            print(f"Fashion-MNIST: found in source.root {src['root']}")
        except DataError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status, rootless or not config_sources("fashion_mnist")


def ensure_fashion_mnist() -> int:
    status, rootless = check_roots()
    if not rootless:
        return status
    return max(status, ensure_default_fashion_mnist())


def ensure_default_fashion_mnist() -> int:
    if found():
        print("Fashion-MNIST: found")
        return 0
    if can_apt():
        print("Fashion-MNIST not found; installing Debian's dataset-fashion-mnist ...")
        apt_install(["dataset-fashion-mnist"])
        if found():
            return 0
    where = ", ".join(str(p) for p in fashion_mnist_candidates({}))
    print(
        "Fashion-MNIST not found (looked in " + where + ").\n"
        "Get it one of these ways:\n"
        "  - as root on Debian/Ubuntu: apt-get install dataset-fashion-mnist\n"
        "  - with internet: set download: true in the fashion_mnist source block of your config\n"
        "  - set root in that source block to a folder holding the four IDX files",
        file=sys.stderr,
    )
    return 1


def main() -> int:
    return max(ensure_fashion_mnist(), ensure_fonts())


if __name__ == "__main__":
    sys.exit(main())
