"""Tables: metrics aggregated over seeds (mean ± std), one row per run, in md / csv / tex.

Columns follow OLTR's Table 3 layout: closed-set many / medium / few / overall top-1, open-set
many / medium / few / overall top-1 and F-measure, plus macro-F1 and AUROC. Values in percent.
Where config gives a paper's reported figure for a cell, a "(paper)" column stands beside it.
Datasets with imbalanced test splits (MFM appendix C.1) get Test-1 / Test-2 top-1 error columns.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .contracts import METRICS_COLUMNS

# (setting, group, metric) -> column title, in display order
COLUMNS: tuple[tuple[tuple[str, str, str], str], ...] = (
    (("closed", "many", "top1"), "Many"),
    (("closed", "medium", "top1"), "Medium"),
    (("closed", "few", "top1"), "Few"),
    (("closed", "overall", "top1"), "Overall"),
    (("closed", "overall", "macro_f1"), "Macro-F1"),
    (("open", "many", "top1"), "Open many"),
    (("open", "medium", "top1"), "Open medium"),
    (("open", "few", "top1"), "Open few"),
    (("open", "overall", "top1"), "Open overall"),
    (("open", "overall", "f_measure"), "F-measure"),
    (("open", "overall", "auroc"), "AUROC"),
)
# what identifies a metric across seeds: every metrics column but the seed and the value
KEYS = tuple(c for c in METRICS_COLUMNS if c not in ("seed", "value"))
# Columns of other splits than the table's, (split, setting, group, metric) -> title, shown only
# when the summary has that split: MFM appendix C.1 / Table 5 report top-1 ERROR on Test-1
# (reversed frequencies) and Test-2 (permuted). Their paper keys are "split/setting/group/metric".
SPLIT_COLUMNS: tuple[tuple[tuple[str, str, str, str], str], ...] = (
    (("test_reversed", "closed", "overall", "error"), "Test-1 error"),
    (("test_permuted", "closed", "overall", "error"), "Test-2 error"),
)
IMBALANCED_NOTE = ("Test-1 / Test-2 error (%): top-1 error on the imbalanced test subsets of MFM appendix C.1 "
                   "(class frequencies of an exponential test profile reversed, head classes flattened / "
                   "randomly permuted), sample-weighted.")


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed) and seed count of every metric, in percent."""
    g = metrics.groupby(list(KEYS), sort=False)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out[["mean", "std"]] = out[["mean", "std"]] * 100.0
    return out.rename(columns={"method": "run"})


def paper_key(*key: str) -> str:
    """'setting/group/metric' (table split) or 'split/setting/group/metric' (SPLIT_COLUMNS)."""
    return "/".join(key)


def paper_columns(splits: tuple[str, ...] = ()) -> dict[str, str]:
    """Every ``paper_results`` key a table can show beside ours -> its column title: the table
    split's COLUMNS ('setting/group/metric') and the SPLIT_COLUMNS of the extra ``splits`` a
    dataset has (e.g. test_reversed). A key outside these would never be rendered."""
    out = {paper_key(*key): title for key, title in COLUMNS}
    out.update({paper_key(*key): title for key, title in SPLIT_COLUMNS if key[0] in splits})
    return out


def table_notes(wide: pd.DataFrame) -> list[str]:
    """Notes for the optional column families present in a wide table."""
    return [IMBALANCED_NOTE] if any(title in wide for _, title in SPLIT_COLUMNS) else []


def build_table(summary: pd.DataFrame, runs: Mapping, paper: Mapping | None = None,
                split: str = "test") -> pd.DataFrame:
    """Wide table (one row per run, in config order) with numeric mean/std columns and, where
    config names them, the paper's figures. Column names: '<title>' mean, '<title> std',
    '<title> (paper)'."""
    paper = paper or {}
    s = summary[summary["split"] == split]
    order = [r for r in runs if r in set(s["run"])]
    extra = [(key, title) for key, title in SPLIT_COLUMNS if (summary["split"] == key[0]).any()]
    by_split = summary.set_index(["run", "split", "setting", "group", "metric"]) if extra else None
    rows = []
    for run in order:
        sub = s[s["run"] == run].set_index(["setting", "group", "metric"])
        row = {"Run": runs[run].get("label") or run, "Seeds": int(sub["n_seeds"].max()) if len(sub) else 0}
        for key, title in COLUMNS:
            if key in sub.index:
                row[title] = float(sub.loc[key, "mean"])
                row[f"{title} std"] = float(sub.loc[key, "std"])
            else:
                row[title], row[f"{title} std"] = np.nan, np.nan
            reported = paper.get(run, {}).get(paper_key(*key))
            if reported is not None:
                row[f"{title} (paper)"] = float(reported)
        for key, title in extra:
            hit = (run, *key) in by_split.index
            row[title] = float(by_split.loc[(run, *key), "mean"]) if hit else np.nan
            row[f"{title} std"] = float(by_split.loc[(run, *key), "std"]) if hit else np.nan
            reported = paper.get(run, {}).get(paper_key(*key))
            if reported is not None:
                row[f"{title} (paper)"] = float(reported)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def display_table(wide: pd.DataFrame) -> pd.DataFrame:
    """Strings 'mean ± std' (percent), with paper columns beside ours."""
    out = pd.DataFrame({"Run": wide["Run"], "Seeds": wide["Seeds"]})
    for _, title in (*COLUMNS, *SPLIT_COLUMNS):
        if title not in wide:
            continue
        out[title] = [_fmt(m, s) for m, s in zip(wide[title], wide[f"{title} std"])]
        if f"{title} (paper)" in wide:
            out[f"{title} (paper)"] = [("–" if np.isnan(v) else f"{v:.2f}") for v in wide[f"{title} (paper)"]]
    return out


def to_markdown(wide: pd.DataFrame, title: str, notes: list[str]) -> str:
    body = display_table(wide).to_markdown(index=False)
    return f"# {title}\n\n" + "".join(f"{n}\n\n" for n in notes) + body + "\n"


# LaTeX's special characters in text mode (and characters that print wrongly in its default OT1
# font encoding: < and > come out as inverted punctuation), as plain text.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$",
}


def latex_escape(text: object) -> str:
    """``text`` as LaTeX source that prints it verbatim (one pass: escapes are not re-escaped)."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(wide: pd.DataFrame, caption: str) -> str:
    """The display table as a LaTeX table; cells, column titles and the caption are plain text,
    escaped here (run labels and dataset names come from the config)."""
    disp = display_table(wide).map(latex_escape)
    disp.columns = [latex_escape(c) for c in disp.columns]
    return disp.to_latex(index=False, caption=latex_escape(caption), escape=False)
