"""docs/fidelity.md against the presets: every config/presets/<name>.yaml has a ``## <name>``
section, and every value its ledger claims in the ``yaml`` column equals the preset's.

The ledger format (defined at the top of docs/fidelity.md): a preset section's tables have the
columns ``setting | paper | preset | yaml | why``; the yaml cell holds backticked claims
``path: value`` (a dotted path into the preset as the workflow reads it: schema defaults filled
in, run parameters with their method's dataclass defaults; ``*`` matches every key at its level
where the rest of the path exists; the value in YAML flow syntax). Each section must claim the
backbone, epochs, batch size, lr and sampler of its runs, and the shot convention when the preset
sets ``shots``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

from longtail.config_check import validate_config
from longtail.methods import make_config

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "docs" / "fidelity.md"
# Every preset of a paper; fmnist_lt.yaml reproduces no paper (the default experiment's runs on
# Fashion-MNIST-LT), so it has nothing to be faithful to.
NOT_PAPERS = {"fmnist_lt"}
PRESETS = sorted(p for p in (ROOT / "config" / "presets").glob("*.yaml") if p.stem not in NOT_PAPERS)
HEADER = ["setting", "paper", "preset", "yaml", "why"]
# every section claims these run parameters (for at least one run), checked against the preset
REQUIRED_PARAMS = ("backbone", "epochs", "batch_size", "lr", "sampler")
CLAIM = re.compile(r"^(?P<path>[A-Za-z0-9_*.\-]+): (?P<value>.+)$")


# ------------------------------------------------------------------------------ parsing


def sections(text: str) -> dict[str, list[str]]:
    """``## name`` -> the section's lines (up to the next ``## `` heading)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row (no ``|`` inside cells: the format forbids it)."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def ledger_rows(lines: list[str], where: str) -> list[dict[str, str]]:
    """The rows of every table in a section, as {column: cell}; every table has HEADER."""
    rows: list[dict[str, str]] = []
    table: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            header = [c.lower() for c in split_row(table[0])]
            assert header == HEADER, f"{where}: table header {header}, expected {HEADER}"
            for body in table[2:]:
                cells = split_row(body)
                assert len(cells) == len(HEADER), f"{where}: row has {len(cells)} cells, expected 5: {body}"
                rows.append(dict(zip(HEADER, cells)))
            table = []
    return rows


def claims(rows: list[dict[str, str]], where: str) -> list[tuple[str, Any]]:
    """(path, value) of every backticked ``path: value`` in the yaml column."""
    out = []
    for row in rows:
        for span in re.findall(r"`([^`]+)`", row["yaml"]):
            m = CLAIM.match(span)
            assert m, f"{where}: yaml claim `{span}` is not 'path: value' (row '{row['setting']}')"
            out.append((m["path"], yaml.safe_load(m["value"])))
    return out


# ------------------------------------------------------------------------------ the preset side


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts (what yaml.safe_load gives for the same value)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolved(preset: Path) -> dict:
    """The preset as the workflow reads it: schema defaults filled in, and every run's params
    replaced by its method config (the dataclass defaults included)."""
    cfg = validate_config(yaml.safe_load(preset.read_text()))
    cfg = _plain(dict(cfg))
    for run in cfg["runs"].values():
        run["params"] = _plain(make_config(run["method"], run["params"]).to_dict())
    return cfg


def lookup(node: Any, parts: list[str], prefix: str = "") -> list[tuple[str, Any]]:
    """(concrete path, value) of every match of ``parts`` below ``node``; ``*`` matches every key
    whose subtree has the rest of the path."""
    if not parts:
        return [(prefix, node)]
    if not isinstance(node, dict):
        return []
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else ([head] if head in node else [])
    out = []
    for k in keys:
        out += lookup(node[k], rest, f"{prefix}.{k}" if prefix else str(k))
    return out


def _ledger() -> dict[str, list[str]]:
    return sections(LEDGER.read_text())


# ------------------------------------------------------------------------------ tests


def test_the_ledger_defines_its_format_and_names_no_missing_preset():
    assert "| setting | paper | preset | yaml | why |" in _ledger().get("Ledger format", []), \
        "docs/fidelity.md: the '## Ledger format' section must show the five-column header"
    stems = {p.stem for p in PRESETS}
    stale = [name for name in _ledger() if re.fullmatch(r"[a-z0-9_]+", name) and name not in stems]
    assert not stale, f"docs/fidelity.md has sections for presets that do not exist: {stale}"


def check_section(preset: Path, lines: list[str]) -> None:
    """Assert that a section's claims hold for ``preset`` and that it makes the required ones."""
    where = f"docs/fidelity.md ## {preset.stem}"
    found = claims(ledger_rows(lines, where), where)
    assert found, f"{where}: no yaml claims"
    cfg = resolved(preset)
    for path, value in found:
        hits = lookup(cfg, path.split("."))
        assert hits, f"{where}: `{path}` is no key of {preset.name}"
        for concrete, actual in hits:
            assert actual == value, f"{where}: ledger says `{concrete}: {value!r}`, the preset has {actual!r}"
    # the settings every ledger states
    paths = [p for p, _ in found]
    for field in REQUIRED_PARAMS:
        if any(field in run["params"] for run in cfg["runs"].values()):
            assert any(re.fullmatch(rf"runs\.[^.]+\.params\.{field}", p) for p in paths), \
                f"{where}: no claim of runs.<run>.params.{field}"
    raw = yaml.safe_load(preset.read_text())
    states_shots = "shots" in raw or any("shots" in ds for ds in raw.get("datasets", {}).values())
    if states_shots:
        assert any(re.fullmatch(r"(datasets\.[^.]+\.)?shots\.convention", p) for p in paths), \
            f"{where}: the preset sets shots; claim shots.convention (or datasets.<d>.shots.convention)"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_has_a_ledger_section_whose_claims_match_the_yaml(preset: Path):
    ledger = _ledger()
    assert preset.stem in ledger, (f"docs/fidelity.md has no '## {preset.stem}' section for "
                                   f"config/presets/{preset.name}")
    check_section(preset, ledger[preset.stem])


# ------------------------------------------------------------------------------ the checker itself


def test_parser_and_lookup_on_a_synthetic_ledger():
    text = ("# t\n\n## Ledger format\n\nx\n\n## p\n\n| setting | paper | preset | yaml | why |\n|---|---|---|---|---|\n"
            "| lr | 0.1 | 0.1 | `runs.a.params.lr: 0.1`, `runs.*.params.epochs: 3` | |\n| data | x | y | | prose |\n")
    secs = sections(text)
    assert set(secs) == {"Ledger format", "p"}
    rows = ledger_rows(secs["p"], "p")
    assert [r["setting"] for r in rows] == ["lr", "data"]
    assert claims(rows, "p") == [("runs.a.params.lr", 0.1), ("runs.*.params.epochs", 3)]
    cfg = {"runs": {"a": {"params": {"lr": 0.1, "epochs": 3}}, "b": {"params": {"epochs": 4}},
                    "c": {"params": {}}}}
    assert lookup(cfg, "runs.*.params.epochs".split(".")) == [("runs.a.params.epochs", 3),
                                                              ("runs.b.params.epochs", 4)]
    assert lookup(cfg, "runs.z.params.lr".split(".")) == []
    with pytest.raises(AssertionError, match="not 'path: value'"):
        claims([{"setting": "s", "yaml": "`runs.a.params.lr=0.1`"}], "p")
    with pytest.raises(AssertionError, match="header"):
        ledger_rows(["| setting | paper | preset | note |", "|---|---|---|---|"], "p")


def test_resolved_presets_fill_the_method_defaults():
    cfg = resolved(ROOT / "config" / "presets" / "mmn_sun397.yaml")
    assert cfg["runs"]["metamodelnet"]["params"]["num_blocks"] == 7  # a dataclass default
    assert cfg["runs"]["oversample"]["params"]["sampler"] == "oversample"
    assert cfg["shots"]["convention"] == "strict"  # a schema default


PRESET = """seeds: [0]
shots: {many: 100, few: 20, convention: inclusive}
datasets:
  d: {source: {name: fashion_mnist}, curation: {n_max: 50, imbalance_factor: 10}}
runs:
  plain: {method: plain, params: {epochs: 3, lr: 0.1}}
"""
ROWS = ["| setting | paper | preset | yaml | why |", "|---|---|---|---|---|",
        "| recipe | x | y | `runs.plain.params.epochs: 3`, `runs.plain.params.lr: 0.1`, "
        "`runs.plain.params.batch_size: 128`, `runs.plain.params.backbone: lenet`, "
        "`runs.plain.params.sampler: instance` | |",
        "| shots | x | y | `shots.convention: inclusive` | |"]


def test_check_section_accepts_true_claims_and_names_a_wrong_value_a_missing_key_and_a_missing_claim(tmp_path):
    preset = tmp_path / "toy.yaml"
    preset.write_text(PRESET)
    check_section(preset, ROWS)  # batch_size 128 and backbone lenet are the dataclass defaults
    with pytest.raises(AssertionError, match=r"ledger says `runs.plain.params.epochs: 4`, the preset has 3"):
        check_section(preset, [*ROWS, "| e | x | y | `runs.plain.params.epochs: 4` | |"])
    with pytest.raises(AssertionError, match=r"`runs.plain.params.epoch` is no key"):
        check_section(preset, [*ROWS, "| e | x | y | `runs.plain.params.epoch: 3` | |"])
    with pytest.raises(AssertionError, match=r"no claim of runs.<run>.params.sampler"):
        check_section(preset, [r.replace(", `runs.plain.params.sampler: instance`", "") for r in ROWS])
    with pytest.raises(AssertionError, match=r"the preset sets shots"):
        check_section(preset, ROWS[:3])
