"""Tables: metrics aggregated over seeds (mean ± std), one row per run, in md / csv / tex.

Columns follow OLTR's Table 3 layout: closed-set many / medium / few / overall top-1, open-set
many / medium / few / overall top-1 and F-measure, plus macro-F1 and AUROC. Values in percent.
Where config gives a paper's reported figure for a cell, a "(paper)" column stands beside it.
Datasets with imbalanced test splits (MFM appendix C.1) get Test-1 / Test-2 top-1 error columns.

A second section, "Open-set detection and calibration", holds per open setting (near: held-out
classes, split ``open``; far: another source, split ``open_far``) AUROC, AUPR-in and FPR at 95 %
TPR (known = positive), AUPR-out (open = positive), both OLTR F-measures and the threshold used,
and the closed-set ECE (15 bins) overall and per shot group. A run with a collapsed seed
(``metrics.collapse_reason``) shows "collapsed" in every cell of both sections, never numbers;
the csv holds one row per run with every column of both sections (NaN where collapsed) and the
number of collapsed seeds.
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
DETECTION_TITLE = "Open-set detection and calibration"
DETECTION_METRICS = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"),
                     ("fpr_at_95_tpr", "FPR@95TPR"), ("f_measure", "F-measure"),
                     ("f_measure_oltr2019", "F-measure (OLTR 2019)"), ("threshold", "Threshold"))
OPEN_SETTINGS = (("open", "Near"), ("open_far", "Far"))
DETECTION_COLUMNS: tuple[tuple[tuple[str, str, str], str], ...] = (
    *(((setting, "overall", metric), f"{prefix} {title}")
      for setting, prefix in OPEN_SETTINGS for metric, title in DETECTION_METRICS),
    (("closed", "overall", "ece"), "ECE"),
    *((("closed", g, "ece"), f"ECE {g}") for g in ("many", "medium", "few")),
)
DETECTION_NOTE = ("Percent, mean ± std over seeds. Near: held-out classes of the same source (split open); far: "
                  "images of another source (split open_far). AUROC, AUPR-in and FPR@95TPR take the KNOWN test "
                  "samples as the positive class, scored by max softmax (OpenOOD v1.5 takes the open set as "
                  "positive: same AUROC, another FPR@95); AUPR-out takes the open set as positive. "
                  "F-measure: OLTR's code since its 2020 fix (rejected known samples are false positives); "
                  "F-measure (OLTR 2019): before the fix, which produced the paper's numbers. Threshold: the "
                  "max-softmax threshold used (%). ECE: expected calibration error, 15 equal-width confidence "
                  "bins, closed test split, per shot group of the true class.")
COLLAPSED_KEY = ("closed", "overall", "collapsed")
COLLAPSED = "collapsed"
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
    split's COLUMNS ('setting/group/metric'), the detection section's, and the SPLIT_COLUMNS of the extra ``splits`` a
    dataset has (e.g. test_reversed). A key outside these would never be rendered."""
    out = {paper_key(*key): title for key, title in COLUMNS}
    for key, title in DETECTION_COLUMNS:  # the detection section's (a key of both: the first section's title)
        out.setdefault(paper_key(*key), title)
    out.update({paper_key(*key): title for key, title in SPLIT_COLUMNS if key[0] in splits})
    return out


def threshold_description(spec: float | Mapping) -> str:
    """The open_threshold setting in words: a fixed number, or the val_tpr rule."""
    if isinstance(spec, Mapping):
        return (f"max softmax < t rejects, t = the confidence that keeps {float(spec.get('tpr', 0.95)):.0%} of the "
                "known validation samples, per run and seed (Near/Far Threshold columns)")
    return f"max softmax < {spec} rejects (a fixed threshold)"


def table_notes(wide: pd.DataFrame) -> list[str]:
    """Notes for the optional column families present in a wide table, and the runs that collapsed."""
    notes = [IMBALANCED_NOTE] if any(title in wide for _, title in SPLIT_COLUMNS) else []
    bad = wide[wide["Collapsed"] > 0] if "Collapsed" in wide else wide.iloc[:0]
    if len(bad):
        notes.append("Collapsed (shown as \"collapsed\", not as results): " + "; ".join(
            f"{r} ({c} of {n} seeds)" for r, c, n in zip(bad["Run"], bad["Collapsed"], bad["Seeds"]))
            + ". See the WARNING line in results/logs/evaluate/ for the reason.")
    return notes


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
    present = set(zip(s["setting"], s["group"], s["metric"]))
    detection = [(key, title) for key, title in DETECTION_COLUMNS
                 if key[0] in set(s["setting"]) and (key[0] != "closed" or key in present)]
    rows = []
    for run in order:
        sub = s[s["run"] == run].set_index(["setting", "group", "metric"])
        row = {"Run": runs[run].get("label") or run, "Seeds": int(sub["n_seeds"].max()) if len(sub) else 0}
        # seeds whose evaluate found a collapse (the summary's mean is in percent)
        hit = sub.loc[COLLAPSED_KEY] if COLLAPSED_KEY in sub.index else None
        row["Collapsed"] = int(round(float(hit["mean"]) / 100 * float(hit["n_seeds"]))) if hit is not None else 0
        for key, title in (*COLUMNS, *detection):
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
        if row["Collapsed"]:  # never a result: no number of a collapsed run reaches a table
            for _, title in (*COLUMNS, *detection, *extra):
                row[title], row[f"{title} std"] = np.nan, np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


SECTIONS = {"results": (*COLUMNS, *SPLIT_COLUMNS), "detection": DETECTION_COLUMNS}


def has_section(wide: pd.DataFrame, section: str) -> bool:
    return any(title in wide for _, title in SECTIONS[section])


def display_table(wide: pd.DataFrame, section: str = "results") -> pd.DataFrame:
    """Strings 'mean ± std' (percent) of one section's columns, with paper columns beside ours;
    "collapsed" in every cell of a run with a collapsed seed."""
    out = pd.DataFrame({"Run": wide["Run"], "Seeds": wide["Seeds"]})
    collapsed = wide["Collapsed"] > 0 if "Collapsed" in wide else pd.Series(False, index=wide.index)
    for _, title in SECTIONS[section]:
        if title not in wide:
            continue
        out[title] = [COLLAPSED if c else _fmt(m, s)
                      for m, s, c in zip(wide[title], wide[f"{title} std"], collapsed)]
        if f"{title} (paper)" in wide:
            out[f"{title} (paper)"] = [("–" if np.isnan(v) else f"{v:.2f}") for v in wide[f"{title} (paper)"]]
    return out


def to_markdown(wide: pd.DataFrame, title: str, notes: list[str]) -> str:
    """The results section, then the detection section where the table has its columns."""
    # disable_numparse: cells are already formatted ("50.00" stays "50.00", as in the tex)
    body = display_table(wide).to_markdown(index=False, disable_numparse=True)
    text = f"# {title}\n\n" + "".join(f"{n}\n\n" for n in notes) + body + "\n"
    if has_section(wide, "detection"):
        text += (f"\n## {DETECTION_TITLE}\n\n{DETECTION_NOTE}\n\n"
                 + display_table(wide, "detection").to_markdown(index=False, disable_numparse=True) + "\n")
    return text


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
    """The display table as LaTeX tables, one per section; cells, column titles and the caption
    are plain text, escaped here (run labels and dataset names come from the config)."""
    parts = []
    for section, cap in (("results", caption), ("detection", f"{DETECTION_TITLE}. {DETECTION_NOTE}")):
        if section == "detection" and not has_section(wide, section):
            continue
        disp = display_table(wide, section).map(latex_escape)
        disp.columns = [latex_escape(c) for c in disp.columns]
        parts.append(disp.to_latex(index=False, caption=latex_escape(cap), escape=False))
    return "\n".join(parts)
