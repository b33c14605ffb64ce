"""Write the measured numbers into README.md and docs/*.md from the files that hold them.

Every number in the documentation's results and performance sections sits between two markers::

    <!-- results:begin table dataset=fmnist_lt columns=Run,Many,Few,Overall -->
    (generated; do not edit by hand)
    <!-- results:end -->

and this script rewrites what lies between them; the begin line and everything outside the
blocks stay byte for byte. The word after ``results:begin`` names the kind of block, the
``key=value`` pairs after it its options:

``table dataset=D [columns=A,B,...] [runs="A;B;..."]``
    ``<results>/tables/D.csv`` (the workflow's table): one row per run, mean (± std over seeds)
    with two decimals, as in ``D.md``; "collapsed" in every cell of a run with a collapsed seed.
    ``columns`` picks and orders columns (default: all);
    ``runs`` picks and orders rows by their Run title, ";"-separated (default: all).
``data dataset=D``
    Images per class and split from ``<results>/data/D/class_counts.parquet``, plus the open set's
    size from ``samples.parquet``.
``rules``
    Snakemake's per-job benchmark files ``<results>/benchmarks/<rule>/**.tsv`` summed per rule:
    jobs, wall seconds, CPU seconds.
``train-time dataset=D``
    Wall and CPU seconds of every ``train`` job of dataset D (mean over seeds).
``bench``
    The output files of ``benchmarks/run_all.py`` (``<results>/bench/*.txt``), verbatim, each under
    the commit and machine its header names. Optional: without them the block is left as it is.
``claims dataset=D``
    The papers' directional claims (:data:`CLAIMS`) on dataset D, from the per-seed metrics
    tables ``<results>/metrics/D/<run>/seed*.parquet``: both runs' mean ± std, the paired
    difference and the number of seeds in which each claim holds.
``papers``
    The papers' reported figures, from ``paper_results`` in ``config/presets/*.yaml``.

Besides the blocks, the default dataset's figures (the first dataset of ``config.yaml``)
``<results>/figures/D/{sample_grid,class_distribution}.png`` are copied to ``docs/img/``, the
committed copies that README.md embeds.

Every block built from ``<results>`` ends with a line naming the source file, the commit and the
machine (``--commit`` / ``--machine``; by default the commit of the checkout holding
``<results>`` and the host running this script, so run it right after the job, on its machine).
A missing source file is an error naming the file and the block; nothing is written then.

    .venv/bin/python tools/write_docs.py [--results results] [--commit SHA] [--machine TEXT]
                                         [--check] [FILE ...]      (default: README.md docs/*.md)

``--check`` writes nothing and exits 1 when a file would change (the numbers drifted).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?P<begin><!-- results:begin(?P<spec>[^\n]*?)-->\n)(?P<body>.*?)(?P<end><!-- results:end -->)",
                   re.DOTALL)
DASH = "–"


class DocsError(Exception):
    """A block cannot be written (missing or malformed source, unknown kind or option)."""


@dataclass(frozen=True)
class Context:
    results: Path
    commit: str
    machine: str
    root: Path = ROOT

    def source(self, path: Path) -> str:
        """The provenance line under a generated table."""
        try:
            shown = path.relative_to(self.results.parent)
        except ValueError:
            shown = path
        return f"*Written by `tools/write_docs.py` from `{shown}`; commit `{self.commit}`, {self.machine}.*\n"


# --- formatting ----------------------------------------------------------------------------------
def _float(text: str | None) -> float:
    if text is None or text.strip() == "":
        return math.nan
    return float(text)


def fmt_cell(mean: str | None, std: str | None = None) -> str:
    """'88.10', '88.10 ± 0.52', or '–' for a missing value (as the workflow's .md table)."""
    m, s = _float(mean), _float(std)
    if math.isnan(m):
        return DASH
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def markdown(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A pipe table; the first ``left`` columns left-aligned, the rest right-aligned."""
    esc = [[c.replace("|", r"\|") for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in esc) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join((":" + "-" * (w + 1)) if i < left else ("-" * (w + 1) + ":")
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(esc[0]), rule, *(line(r) for r in esc[1:])]) + "\n"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DocsError(f"{what} needs {path}, which does not exist; run the workflow first "
                        f"(make run) or pass --results DIR")
    return path


# --- block kinds ---------------------------------------------------------------------------------
def block_table(ctx: Context, opts: dict[str, str], what: str) -> str:
    dataset = opts.get("dataset") or _missing_option(what, "dataset")
    path = require(ctx.results / "tables" / f"{dataset}.csv", what)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    shown = [f for f in fields if f != "dataset" and not f.endswith(" std")]
    if "columns" in opts:
        wanted = [c.strip() for c in opts["columns"].split(",") if c.strip()]
        unknown = [c for c in wanted if c not in shown]
        if unknown:
            raise DocsError(f"{what}: {path} has no column(s) {unknown}; it has {shown}")
        shown = wanted
    if "runs" in opts:  # a subset of the rows, in the order given (the table's Run titles, ";"-separated)
        wanted = [r.strip() for r in opts["runs"].split(";") if r.strip()]
        by_run = {row["Run"]: row for row in rows}
        unknown = [r for r in wanted if r not in by_run]
        if unknown:
            raise DocsError(f"{what}: {path} has no row(s) {unknown}; it has {list(by_run)}")
        rows = [by_run[r] for r in wanted]
    if not rows:
        raise DocsError(f"{what}: {path} has no rows")
    body = []
    for row in rows:
        cells = []
        collapsed = _float(row.get("Collapsed")) > 0  # NaN (no column) compares False
        for col in shown:
            if col == "Run":
                cells.append(row[col])
            elif col in ("Seeds", "Collapsed"):
                cells.append(str(int(_float(row[col]))) if row[col] else DASH)
            elif collapsed:  # as the workflow's .md: never a number of a collapsed run
                cells.append("collapsed")
            else:
                cells.append(fmt_cell(row[col], row.get(f"{col} std")))
        body.append(cells)
    return markdown(shown, body) + "\n" + ctx.source(path)


def block_data(ctx: Context, opts: dict[str, str], what: str) -> str:
    import pandas as pd

    dataset = opts.get("dataset") or _missing_option(what, "dataset")
    folder = ctx.results / "data" / dataset
    counts = pd.read_parquet(require(folder / "class_counts.parquet", what))
    cols = [("class_name", "Class"), ("shot_group", "Group"), ("n_train", "Train"), ("n_val", "Val"),
            ("n_meta", "Meta"), ("n_test", "Test"), ("n_test_reversed", "Test-1"),
            ("n_test_permuted", "Test-2")]
    cols = [(c, t) for c, t in cols if c in counts]
    rows = [[str(r[c]) for c, _ in cols] for r in counts.to_dict("records")]
    total = ["total", ""] + [str(int(counts[c].sum())) for c, _ in cols[2:]]
    text = markdown([t for _, t in cols], [*rows, total], left=2)
    samples = folder / "samples.parquet"
    if samples.exists():
        splits = pd.read_parquet(samples, columns=["split", "class_name", "label"])
        opened = splits[splits["split"] == "open"]
        if len(opened):
            names = ", ".join(sorted(opened["class_name"].unique()))
            text += f"\nOpen set (label −1): {len(opened)} test images of {names}.\n"
    return text + "\n" + ctx.source(folder / "class_counts.parquet")


def _tsv_row(path: Path) -> dict[str, str]:
    with path.open(newline="") as fh:
        try:
            return next(csv.DictReader(fh, delimiter="\t"))
        except StopIteration:
            raise DocsError(f"{path} is empty") from None


def block_rules(ctx: Context, opts: dict[str, str], what: str) -> str:
    folder = require(ctx.results / "benchmarks", what)
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for tsv in sorted(folder.rglob("*.tsv")):
        row = _tsv_row(tsv)
        rule = tsv.relative_to(folder).parts[0]
        acc[rule][0] += 1
        acc[rule][1] += _float(row.get("s"))
        cpu = _float(row.get("cpu_time")) if row.get("cpu_time") not in (None, "", "NA") else 0.0
        acc[rule][2] += cpu
    if not acc:
        raise DocsError(f"{what}: no benchmark files under {folder}")
    order = sorted(acc, key=lambda r: (-acc[r][2], r))
    rows = [[r, str(int(acc[r][0])), f"{acc[r][1]:.1f}", f"{acc[r][2]:.1f}"] for r in order]
    rows.append(["total", str(int(sum(v[0] for v in acc.values()))), f"{sum(v[1] for v in acc.values()):.1f}",
                 f"{sum(v[2] for v in acc.values()):.1f}"])
    return markdown(["Rule", "Jobs", "Wall s (summed)", "CPU s (summed)"], rows) + "\n" + ctx.source(folder)


def block_train_time(ctx: Context, opts: dict[str, str], what: str) -> str:
    dataset = opts.get("dataset") or _missing_option(what, "dataset")
    folder = require(ctx.results / "benchmarks" / "train" / dataset, what)
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for tsv in sorted(folder.glob("*/seed*.tsv")):
        row = _tsv_row(tsv)
        runs[tsv.parent.name].append((_float(row.get("s")), _float(row.get("cpu_time"))))
    if not runs:
        raise DocsError(f"{what}: no train benchmark files under {folder}")
    means = {r: (sum(v[0] for v in vals) / len(vals), sum(v[1] for v in vals) / len(vals), len(vals))
             for r, vals in runs.items()}
    order = sorted(means, key=lambda r: (-means[r][0], r))
    rows = [[r, str(means[r][2]), f"{means[r][0]:.1f}", f"{means[r][1]:.1f}"] for r in order]
    return markdown(["Run", "Seeds", "Wall s", "CPU s"], rows) + "\n" + ctx.source(folder)


def block_bench(ctx: Context, opts: dict[str, str], what: str) -> str | None:
    folder = ctx.results / "bench"
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        print(f"write_docs: {what}: no benchmark output in {folder} (run make bench); block left as it is",
              file=sys.stderr)
        return None
    parts = []
    for path in files:
        lines = path.read_text().splitlines()
        header = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else path.name
        body = "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip("\n")
        parts.append(f"#### `{path.stem}`\n\n{header}\n\n```text\n{body}\n```\n")
    return "\n".join(parts)


def block_papers(ctx: Context, opts: dict[str, str], what: str) -> str:
    import yaml

    presets = sorted((ctx.root / "config" / "presets").glob("*.yaml"))
    parts = []
    for preset in presets:
        cfg = yaml.safe_load(preset.read_text()) or {}
        for dataset, runs in (cfg.get("paper_results") or {}).items():
            keys: list[str] = []
            for figures in runs.values():
                keys += [k for k in figures if k not in keys]
            rows = [[run, *(str(figures[k]) if k in figures else DASH for k in keys)]
                    for run, figures in runs.items()]
            parts.append(f"`{preset.relative_to(ctx.root)}`, dataset `{dataset}`:\n\n"
                         + markdown(["Run", *keys], rows))
    if not parts:
        raise DocsError(f"{what}: no paper_results in {ctx.root / 'config/presets'}")
    return "\n".join(parts)


@dataclass(frozen=True)
class Claim:
    """A paper's directional claim, tested as ``run`` against ``baseline`` on one metric row
    (test split) of the metrics tables, paired by seed."""

    paper: str
    claim: str
    run: str
    baseline: str
    setting: str
    group: str
    metric: str
    higher_is_better: bool = True


CLAIMS = (
    Claim("MetaModelNet", "few-shot accuracy above plain", "metamodelnet", "plain", "closed", "few", "top1"),
    Claim("MetaModelNet", "few-shot accuracy above its classifier alone", "metamodelnet", "mmn_classifier_alone",
          "closed", "few", "top1"),
    Claim("OLTR", "open-set F-measure above plain (near open set)", "oltr", "plain", "open", "overall", "f_measure"),
    Claim("OLTR", "open-set F-measure above plain (far open set)", "oltr", "plain", "open_far", "overall",
          "f_measure"),
    Claim("KT", "ensemble's few-shot accuracy above the cosine classifier", "kt_ensemble", "kt_backbone",
          "closed", "few", "top1"),
    Claim("MFM", "error below plain", "mfm", "plain", "closed", "overall", "error", higher_is_better=False),
    Claim("LDAM-DRW", "error below plain", "ldam_drw", "plain", "closed", "overall", "error",
          higher_is_better=False),
    Claim("Class-balanced loss", "error below plain (CB focal)", "cb_focal", "plain", "closed", "overall", "error",
          higher_is_better=False),
    Claim("Class-balanced loss", "error below plain (CB softmax)", "cb_softmax", "plain", "closed", "overall",
          "error", higher_is_better=False),
)


def claim_values(folder: Path, run: str, c: Claim) -> dict[int, float]:
    """{seed: value in percent} of one run's metric row, from its per-seed metrics tables."""
    import pandas as pd

    out = {}
    for path in sorted((folder / run).glob("seed*.parquet")):
        if path.name.endswith(".per_class.parquet"):
            continue
        m = pd.read_parquet(path)
        hit = m[(m["split"] == "test") & (m["setting"] == c.setting) & (m["group"] == c.group)
                & (m["metric"] == c.metric)]
        if len(hit):
            out[int(path.stem.removeprefix("seed"))] = 100.0 * float(hit["value"].iloc[0])
    return out


def block_claims(ctx: Context, opts: dict[str, str], what: str) -> str:
    """Each claim of :data:`CLAIMS`: the run's and the baseline's mean ± std over seeds, their paired
    difference (run − baseline, so negative is better for an error), and in how many seeds the
    claim holds."""
    import statistics

    dataset = opts.get("dataset") or _missing_option(what, "dataset")
    folder = require(ctx.results / "metrics" / dataset, what)
    rows = []

    def ms(values: list[float]) -> str:
        if not values:
            return DASH
        return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    for c in CLAIMS:
        a, b = claim_values(folder, c.run, c), claim_values(folder, c.baseline, c)
        seeds = sorted(set(a) & set(b))
        what_row = f"{c.paper}: {c.claim}"
        pair = f"`{c.run}` vs `{c.baseline}`"
        if not seeds:
            missing = [r for r, v in ((c.run, a), (c.baseline, b)) if not v]
            rows.append([what_row, pair, DASH, DASH, DASH, f"not measured (no {', '.join(missing)} results)"])
            continue
        diff = [a[s] - b[s] for s in seeds]
        holds = sum((d > 0) if c.higher_is_better else (d < 0) for d in diff)
        verdict = "holds" if holds == len(seeds) else "does not hold" if holds == 0 else "mixed"
        rows.append([what_row, pair, ms([a[s] for s in seeds]), ms([b[s] for s in seeds]), ms(diff),
                     f"{verdict} ({holds}/{len(seeds)} seeds)"])
    return markdown(["Claim", "Runs", "Run", "Baseline", "Difference", "Verdict"], rows, left=2) \
        + "\n" + ctx.source(folder)


KINDS = {"claims": block_claims, "table": block_table, "data": block_data, "rules": block_rules, "train-time": block_train_time,
         "bench": block_bench, "papers": block_papers}


def _missing_option(what: str, key: str) -> str:
    raise DocsError(f"{what}: option {key}=... is required")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    try:
        words = shlex.split(spec)
    except ValueError as exc:
        raise DocsError(f"malformed block '{spec.strip()}': {exc}") from None
    if not words:
        raise DocsError("a results:begin marker names no block kind")
    kind, opts = words[0], {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise DocsError(f"block '{spec.strip()}': '{word}' is not key=value")
        opts[key] = value
    if kind not in KINDS:
        raise DocsError(f"block '{spec.strip()}': unknown kind '{kind}'; choose one of {sorted(KINDS)}")
    return kind, opts


# --- files ---------------------------------------------------------------------------------------
def render(text: str, ctx: Context, name: str = "<text>") -> str:
    """``text`` with every results block rewritten; the rest unchanged."""
    begins = text.count("<!-- results:begin")
    if begins != text.count("<!-- results:end -->"):
        raise DocsError(f"{name}: {begins} results:begin markers but {text.count('<!-- results:end -->')} "
                        f"results:end markers")
    out, pos = [], 0
    for m in BLOCK.finditer(text):
        if "<!-- results:begin" in m.group("body"):
            raise DocsError(f"{name}: results block '{m.group('spec').strip()}' has no results:end before the next "
                            f"results:begin")
        line = text.count("\n", 0, m.start()) + 1
        try:
            kind, opts = parse_spec(m.group("spec"))
        except DocsError as exc:
            raise DocsError(f"{name}:{line}: {exc}") from None
        body = KINDS[kind](ctx, opts, f"{name}:{line} block '{m.group('spec').strip()}'")
        out += [text[pos:m.end("begin")], m.group("body") if body is None else body, m.group("end")]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def default_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# the default dataset's figures that README.md shows, copied under these names into docs/img/
DOC_FIGURES = ("sample_grid.png", "class_distribution.png")


def default_dataset(root: Path = ROOT) -> str:
    """The first dataset of the default experiment (``config.yaml`` beside the Snakefile)."""
    import yaml

    path = root / "config.yaml"
    datasets = (yaml.safe_load(path.read_text()) or {}).get("datasets") or {}
    if not datasets:
        raise DocsError(f"{path} names no dataset: the README's figures come from its first dataset")
    return next(iter(datasets))


def doc_figures(ctx: Context, dataset: str | None = None) -> dict[Path, bytes]:
    """{docs/img/<name>: the bytes of <results>/figures/<dataset>/<name>} for the README's figures."""
    dataset = dataset or default_dataset(ctx.root)
    out = {}
    for name in DOC_FIGURES:
        src = require(ctx.results / "figures" / dataset / name, f"the README figure docs/img/{name}")
        out[ctx.root / "docs" / "img" / name] = src.read_bytes()
    return out


def write_docs(files: list[Path], ctx: Context, check: bool = False,
               figures: dict[Path, bytes] | None = None) -> list[Path]:
    """Render every file first (any error: nothing written), then write the changed ones and the
    changed ``figures`` ({destination: bytes}). Returns the files that changed (with ``check``:
    that would change)."""
    figures = figures or {}
    new = {}
    for path in files:
        text = path.read_text()
        new[path] = (text, render(text, ctx, str(path.relative_to(ctx.root) if path.is_relative_to(ctx.root)
                                                 else path)))
    changed = [p for p, (old, text) in new.items() if old != text]
    images = [p for p, data in figures.items() if not p.is_file() or p.read_bytes() != data]
    if not check:
        for path in changed:
            path.write_text(new[path][1])
        for path in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(figures[path])
    return changed + images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="the results folder (default: results)")
    ap.add_argument("--commit", help="commit the results were produced at (default: the checkout holding --results)")
    ap.add_argument("--machine", help="machine they were produced on (default: this host)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    args = ap.parse_args(argv)
    results = args.results.resolve()
    ctx = Context(results=results, commit=args.commit or provenance.commit(results.parent),
                  machine=args.machine or provenance.machine(), root=ROOT)
    files = [f.resolve() for f in args.files] or default_files(ROOT)
    try:
        # the README's figures go with the default file set; naming files updates only those
        figures = doc_figures(ctx) if not args.files else None
        changed = write_docs(files, ctx, check=args.check, figures=figures)
    except DocsError as exc:
        print(f"write_docs: error: {exc}", file=sys.stderr)
        return 1
    verb = "would change" if args.check else "rewrote"
    for path in changed:
        print(f"write_docs: {verb} {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if not changed:
        print("write_docs: every block is up to date")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
