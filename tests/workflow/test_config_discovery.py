"""Which config a run uses, through real `snakemake -n` runs (a small target, so each takes a couple
of seconds): config.yaml is found beside the Snakefile from any folder, `--config key=value`
overrides it instead of replacing it, and config files Snakemake accepts silently but that cannot
be what the user meant (an empty one, a key given twice) fail at parse time naming the file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from smk_runs import ROOT, SMK, SMOKE, env

MODEL = "results/train/glyph_lt/plain/seed0/model.pt"  # a job of config.yaml's dataset and run


def dry_run(cwd: Path, args: Sequence[str]) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile -n <args>`` from ``cwd``; stdout and stderr in ``.stdout``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([SMK, "-s", str(ROOT / "Snakefile"), "-n", *args], cwd=cwd, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


@pytest.mark.parametrize("where", ["cwd", "directory"])
def test_config_yaml_is_found_from_another_folder(tmp_path: Path, where: str) -> None:
    """`-s` from another folder, or `-d` to one, uses the workflow's own config.yaml."""
    args = [MODEL] if where == "cwd" else ["-d", str(tmp_path / "elsewhere"), MODEL]
    proc = dry_run(tmp_path / "cwd", args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert str(ROOT / "config.yaml") in proc.stdout
    assert "rule train:" in proc.stdout


def test_config_values_alone_override_config_yaml(tmp_path: Path) -> None:
    """`--config device=cuda` keeps config.yaml's datasets and runs and sets device on top (a
    training job then holds the gpu token)."""
    proc = dry_run(tmp_path, [MODEL, "--config", "device=cuda"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "is extended by additional config specified via the command line" in proc.stdout
    assert "gpu=1," in proc.stdout


def test_configfile_replaces_config_yaml(tmp_path: Path) -> None:
    """A given config file is the whole config: config.yaml's dataset is unknown."""
    proc = dry_run(tmp_path, [MODEL, "--configfile", str(SMOKE)])  # --configfile takes several
    assert proc.returncode != 0
    assert str(ROOT / "config.yaml") not in proc.stdout
    assert "MissingRuleException" in proc.stdout or "No rule to produce" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("content", ["{}\n", "# nothing but a comment\n{}\n"])
def test_empty_config_file_is_refused(tmp_path: Path, content: str) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text(content)
    proc = dry_run(tmp_path, ["--configfile", str(cfg)])
    assert proc.returncode != 0
    assert f"config error: {cfg} holds no settings" in proc.stdout, proc.stdout[-3000:]
    assert "Job stats" not in proc.stdout


# (text of smoke.yaml, the same with a key given twice, the key)
DUPLICATES = {
    "top level": ("seeds: [0]\n", "seeds: [0]\nseeds: [1]\n", "seeds"),
    "a run": ("runs:\n", "runs:\n  plain: {method: crt}\n", "plain"),
    "a parameter": ("    method: plain\n", "    method: plain\n    method: crt\n", "method"),
    "a flow mapping": ("{epochs: 2, batch_size: 64}", "{epochs: 2, batch_size: 64, epochs: 20}", "epochs"),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_duplicate_key_is_refused(tmp_path: Path, case: str) -> None:
    """A key given twice fails naming the file, the key and the line of its second occurrence
    (YAML would keep the last value)."""
    old, new, key = DUPLICATES[case]
    text = SMOKE.read_text()
    assert text.count(old) == 1
    text = text.replace(old, new)
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(text)
    second = [n for n, line in enumerate(text.splitlines(), 1) for _ in re.findall(rf"\b{key}:", line)][1]
    proc = dry_run(tmp_path, ["--configfile", str(cfg)])
    assert proc.returncode != 0
    assert f"config error: {cfg}: line {second}: key '{key}' is given twice" in proc.stdout, proc.stdout[-3000:]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """`<<: *anchor` then an overriding key is YAML's merge, not a duplicate."""
    smoke = SMOKE.read_text().replace("    method: plain\n", "    <<: &base {method: crt}\n    method: plain\n")
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(smoke)
    proc = dry_run(tmp_path, ["results/data/fmnist_smoke/samples.parquet", "--configfile", str(cfg)])
    assert proc.returncode == 0, proc.stdout[-3000:]
