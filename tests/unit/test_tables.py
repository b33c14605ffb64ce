"""The LaTeX table: LaTeX's special characters in run labels, column titles and the caption are
escaped to text that prints them as written (exact text checked), and the .tex compiles with
pdflatex where it is installed (apt-get install texlive-latex-base; skipped elsewhere)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from longtail.tables import (COLUMNS, DETECTION_TITLE, build_table, display_table, latex_escape, summarise,
                             table_notes, to_latex, to_markdown)

LABEL = r"OLTR_full & 50% {x} #1 $a$ ~b^c \d"
LABEL_TEX = (r"OLTR\_full \& 50\% \{x\} \#1 \$a\$ \textasciitilde{}b\textasciicircum{}c "
             r"\textbackslash{}d")
# the caption rule table writes: dataset name, then the note with %, ±, < and >
CAPTION = ("Results on fmnist_smoke: Top-1 accuracy (%) on the balanced test split, mean ± std over seeds. "
           "Shot groups by training images: many > 100, few < 20.")
CAPTION_TEX = (r"Results on fmnist\_smoke: Top-1 accuracy (\%) on the balanced test split, mean $\pm$ std over "
               r"seeds. Shot groups by training images: many \textgreater{} 100, few \textless{} 20.")


def wide() -> pd.DataFrame:
    """Two runs, one labelled with every special character, one by its name; one value missing."""
    rows = []
    for i, run in enumerate(("oltr_full", "plain_ce")):
        for key, _ in COLUMNS:
            rows.append(dict(zip(("setting", "group", "metric"), key), dataset="d", run=run, split="test",
                             mean=40.0 + i, std=1.5 if run == "oltr_full" else np.nan, n_seeds=2 - i))
    summary = pd.DataFrame(rows)
    summary = summary[~((summary["run"] == "plain_ce") & (summary["metric"] == "auroc"))]
    return build_table(summary, {"oltr_full": {"label": LABEL}, "plain_ce": {}},
                       {"oltr_full": {"closed/overall/top1": 41.1}})


def test_latex_escape_exact_text():
    assert latex_escape(LABEL) == LABEL_TEX
    assert latex_escape(CAPTION) == CAPTION_TEX
    assert latex_escape("plain text, 1.5 - 2") == "plain text, 1.5 - 2"


def test_to_latex_escapes_cells_titles_and_caption():
    tex = to_latex(wide(), CAPTION)
    assert f"\\caption{{{CAPTION_TEX}}}" in tex
    assert tex.count("\\begin{table}") == 2  # results, then open-set detection and calibration
    tex = tex.split("\\end{table}")[0]
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    header, first, second = rows
    assert first.startswith(f"{LABEL_TEX} & 2 & 40.00 $\\pm$ 1.50 & ")
    assert second.startswith(r"plain\_ce & 1 & 41.00 & ") and second.endswith(r"& – \\")  # AUROC missing
    assert header.startswith("Run & Seeds & Many & ") and "Overall (paper)" in header and "41.10" in first
    assert first.count(" & ") == second.count(" & ") == header.count(" & ")  # the label's & is no separator


def test_markdown_keeps_the_label_as_written():
    assert LABEL in to_markdown(wide(), "t", [])


def compile_tex(tex: str, folder: Path) -> subprocess.CompletedProcess:
    """Compile a table inside a minimal document (booktabs rules as plain \\hline where the package
    is not installed: texlive-latex-base alone lacks it)."""
    (folder / "table.tex").write_text(tex)
    (folder / "doc.tex").write_text(
        "\\documentclass{article}\n"
        "\\IfFileExists{booktabs.sty}{\\usepackage{booktabs}}"
        "{\\let\\toprule\\hline\\let\\midrule\\hline\\let\\bottomrule\\hline}\n"
        "\\begin{document}\n\\input{table.tex}\n\\end{document}\n")
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (apt-get install texlive-latex-base)")
def test_tex_compiles_with_pdflatex(tmp_path):
    proc = compile_tex(to_latex(wide(), CAPTION), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log, log[-3000:]


def metrics_rows(run: str, seed: int, values: dict[tuple[str, str, str], float]) -> list[dict]:
    return [dict(dataset="d", method=run, seed=seed, split="test", setting=k[0], group=k[1], metric=k[2], value=v)
            for k, v in values.items()]


def test_detection_section_near_and_far_mean_and_std():
    # two seeds: near AUROC .80 / .90 -> 85.00 ± 7.07 (std ddof 1: sqrt(2 * 5^2) = 7.07); far AUROC .99 / .97
    # -> 98.00 ± 1.41; ECE .10 / .20 -> 15.00 ± 7.07; threshold .5 / .5 -> 50.00 ± 0.00.
    rows = []
    for seed, (near, far, ece) in enumerate([(0.8, 0.99, 0.1), (0.9, 0.97, 0.2)]):
        rows += metrics_rows("plain", seed, {
            ("closed", "overall", "top1"): 0.5, ("closed", "overall", "ece"): ece,
            ("closed", "overall", "collapsed"): 0.0, ("open", "overall", "auroc"): near,
            ("open", "overall", "threshold"): 0.5, ("open_far", "overall", "auroc"): far})
    wide = build_table(summarise(pd.DataFrame(rows)), {"plain": {}})
    assert wide.loc[0, "Near AUROC"] == pytest.approx(85.0) and wide.loc[0, "Far AUROC"] == pytest.approx(98.0)
    assert wide.loc[0, "Collapsed"] == 0
    shown = display_table(wide, "detection")
    assert shown.loc[0, "Near AUROC"] == "85.00 ± 7.07"
    assert shown.loc[0, "Far AUROC"] == "98.00 ± 1.41"
    assert shown.loc[0, "ECE"] == "15.00 ± 7.07"
    assert shown.loc[0, "Near Threshold"] == "50.00 ± 0.00"
    assert "ECE many" not in shown  # no per-group ECE rows, no column
    md = to_markdown(wide, "t", [])
    assert f"## {DETECTION_TITLE}" in md and "KNOWN test samples as the positive class" in md
    assert md.index("| Run") < md.index(DETECTION_TITLE) < md.index("98.00 ± 1.41")
    assert "Far AUROC" not in display_table(wide)  # the results section keeps its own columns


def test_markdown_keeps_two_decimals_of_one_seed():
    # one seed: no std, the cell is "100.00"; tabulate's number parsing would print it as "100"
    wide = build_table(summarise(pd.DataFrame(metrics_rows("plain", 0, {("closed", "overall", "top1"): 1.0}))),
                       {"plain": {}})
    assert "| 100.00 " in to_markdown(wide, "t", [])


def test_no_detection_section_without_open_or_ece_rows():
    wide = build_table(summarise(pd.DataFrame(metrics_rows("plain", 0, {("closed", "overall", "top1"): 0.5}))),
                       {"plain": {}})
    assert DETECTION_TITLE not in to_markdown(wide, "t", [])
    assert to_latex(wide, "c").count("\\begin{table}") == 1


def test_collapsed_run_shows_no_numbers():
    # seed 1 of "bad" collapsed: every cell of "bad" reads "collapsed" in both sections, its csv numbers are
    # NaN and the note names it; "good" keeps its numbers.
    rows = []
    for run, flags in (("good", (0.0, 0.0)), ("bad", (0.0, 1.0))):
        for seed, flag in enumerate(flags):
            rows += metrics_rows(run, seed, {("closed", "overall", "top1"): 0.6,
                                             ("closed", "overall", "collapsed"): flag, ("open", "overall", "auroc"): 0.7})
    wide = build_table(summarise(pd.DataFrame(rows)), {"good": {}, "bad": {}}, {"bad": {"closed/overall/top1": 55.0}})
    assert wide["Collapsed"].tolist() == [0, 1]
    assert wide.loc[0, "Overall"] == pytest.approx(60.0) and np.isnan(wide.loc[1, "Overall"])
    for section in ("results", "detection"):
        shown = display_table(wide, section)
        metric_cells = [c for c in shown.columns if c not in ("Run", "Seeds") and not c.endswith("(paper)")]
        assert set(shown.loc[1, metric_cells]) == {"collapsed"}
        assert "collapsed" not in set(shown.loc[0, metric_cells])
    assert display_table(wide).loc[1, "Overall (paper)"] == "55.00"  # the paper's figure stays
    assert any("bad (1 of 2 seeds)" in n for n in table_notes(wide))


# ------------------------------------------------------------------------------ paper figures


def test_paper_columns_are_the_rendered_columns_and_the_dataset_extra_splits():
    from longtail.tables import SPLIT_COLUMNS, paper_columns

    base = paper_columns()
    assert base["closed/overall/top1"] == "Overall" and base["open/overall/f_measure"] == "F-measure"
    from longtail.tables import DETECTION_COLUMNS

    extra = {k for k, _ in DETECTION_COLUMNS} - {k for k, _ in COLUMNS}
    assert len(base) == len(COLUMNS) + len(extra) and "closed/overall/mean_class_acc" not in base
    assert base["open/overall/f_measure_oltr2019"] == "Near F-measure (OLTR 2019)"
    assert "test_reversed/closed/overall/error" not in base
    both = paper_columns(("test_reversed", "test_permuted"))
    assert both["test_reversed/closed/overall/error"] == "Test-1 error"
    assert len(both) == len(base) + len(SPLIT_COLUMNS)


def test_check_config_names_a_paper_key_that_is_no_column_and_a_run_not_on_the_dataset():
    import copy

    import yaml

    from longtail.config_check import ConfigError, validate_config

    smoke = yaml.safe_load((Path(__file__).resolve().parents[2] / "tests/configs/smoke.yaml").read_text())
    cfg = copy.deepcopy(smoke)
    cfg["paper_results"] = {"fmnist_smoke": {"plain": {"closed/overall/mean_class_acc": 48.0}}}
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    msg = str(exc.value)
    assert msg.startswith("paper_results.fmnist_smoke.plain.closed/overall/mean_class_acc: not a table column")
    assert "closed/overall/top1" in msg and "\n" not in msg
    cfg = copy.deepcopy(smoke)
    cfg["paper_results"] = {"fmnist_smoke": {"plain": {"closed/overall/top1": 48.0}}}
    validate_config(cfg)  # a real column passes
    cfg = copy.deepcopy(smoke)
    cfg["paper_results"] = {"fmnist_smoke": {"nope": {"closed/overall/top1": 48.0}}}
    with pytest.raises(ConfigError, match=r"paper_results.fmnist_smoke.nope: no run of that name; runs: plain"):
        validate_config(cfg)


def _synthetic_summary(runs: list[str], splits: tuple[str, ...]) -> pd.DataFrame:
    from longtail.tables import SPLIT_COLUMNS

    from longtail.tables import DETECTION_COLUMNS

    keys = dict.fromkeys(key for key, _ in (*COLUMNS, *DETECTION_COLUMNS))
    rows = [dict(zip(("setting", "group", "metric"), key), run=r, split="test", mean=1.0, std=np.nan, n_seeds=1)
            for r in runs for key in keys]
    rows += [dict(zip(("split", "setting", "group", "metric"), key), run=r, mean=1.0, std=np.nan, n_seeds=1)
             for r in runs for key, _ in SPLIT_COLUMNS if key[0] in splits]
    return pd.DataFrame(rows)


PRESETS = sorted((Path(__file__).resolve().parents[2] / "config" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_paper_figure_of_every_preset_appears_beside_ours(preset):
    """Each figure in paper_results lands in its run's row, in the '(paper)' column of its key, in
    the rendered markdown table (the workflow's table step on a synthetic metrics summary)."""
    import yaml

    from longtail import targets
    from longtail.config_check import validate_config
    from longtail.contracts import IMBALANCED_TESTS
    from longtail.tables import display_table, paper_columns

    cfg = validate_config(yaml.safe_load(preset.read_text()))
    for dname, per_run in cfg["paper_results"].items():
        splits = tuple(IMBALANCED_TESTS[t] for t in cfg["datasets"][dname]["curation"]["imbalanced_tests"])
        runs = targets.table_runs(cfg, dname)
        wide = build_table(_synthetic_summary(list(runs), splits), runs, per_run)
        shown = pd.concat([display_table(wide, sec).set_index("Run") for sec in ("results", "detection")], axis=1)
        md = to_markdown(wide, dname, [])
        # the markdown's tables: (header cells, data lines) of each
        tables, current = [], None
        for ln in md.splitlines():
            if ln.startswith("|"):
                if current is None:
                    current = ([c.strip() for c in ln.split("|")], [])
                    tables.append(current)
                elif not set(ln) <= set("|:- "):
                    current[1].append(ln)
            else:
                current = None
        titles = paper_columns(splits)
        for run, figures in per_run.items():
            label = runs[run].get("label") or run
            row = shown.loc[label]
            for key, value in figures.items():
                if value is None:
                    continue
                column = f"{titles[key]} (paper)"
                assert row[column] == f"{value:.2f}", (dname, run, key)
                # and in the markdown row of the run, under the same column of its section's table
                header, lines = next(t for t in tables if column in t[0])
                line = next(ln for ln in lines if ln.split("|")[1].strip() == label)
                assert float(line.split("|")[header.index(column)]) == pytest.approx(value, abs=0.005), (dname, run, key)
