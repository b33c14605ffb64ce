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

from longtail.tables import COLUMNS, build_table, latex_escape, to_latex, to_markdown

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
