"""tools/write_docs.py: results blocks rewritten with exactly the table's numbers, the rest of each
file untouched, and clear errors (nothing written) when a source is missing."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

import write_docs
from write_docs import Context, DocsError

HEADER = ["dataset", "Run", "Seeds", "Many", "Many std", "Few", "Few std", "Overall", "Overall std",
          "F-measure", "F-measure std", "Overall (paper)"]
ROWS = [
    ["toy", "plain", "2", "88.125", "0.5", "0.0", "0.0", "60.824999999999996", "1.2345", "67.6024386785765", "2.5",
     "61.0"],
    ["toy", "OLTR | full", "2", "87.35", "", "49.2", "3.14159", "72.17", "0.004", "73.99", "", ""],
    ["toy", "kt_wh", "1", "68.7", "", "69.5", "", "", "", "70.01", "", ""],
]
PROSE_BEFORE = "# Title\n\nSome prose with 12.34 that is not ours.\n\n"
PROSE_AFTER = "\nMore prose.\n<!-- a comment -->\n| not | a | block |\n"


def make_results(root: Path) -> Path:
    results = root / "results"
    (results / "tables").mkdir(parents=True)
    with (results / "tables" / "toy.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(ROWS)
    for rule, sub, s, cpu in [("train", "toy/plain/seed0.tsv", "10.25", "8.0"),
                              ("train", "toy/plain/seed1.tsv", "11.75", "9.0"),
                              ("train", "toy/kt_wh/seed0.tsv", "3.0", "2.5"),
                              ("table", "toy.tsv", "0.5", "0.5")]:
        path = results / "benchmarks" / rule / sub
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:10\t100.0\t{cpu}\n")
    return results


def ctx_for(results: Path) -> Context:
    return Context(results=results, commit="abc1234", machine="test machine", root=results.parent)


def doc(spec: str, body: str = "stale 99.99\n") -> str:
    return f"{PROSE_BEFORE}<!-- results:begin {spec} -->\n{body}<!-- results:end -->{PROSE_AFTER}"


def table_rows(text: str) -> list[list[str]]:
    """Cells of the table in the first results block of ``text`` (header included, alignment row
    dropped)."""
    inside = text.split("<!-- results:end -->")[0].split(" -->\n", 1)[-1]
    lines = [ln for ln in inside.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return [cells[0], *cells[2:]]


def expected(mean: str, std: str) -> str:
    if mean == "":
        return "–"
    return f"{float(mean):.2f}" + ("" if std == "" else f" ± {float(std):.2f}")


def test_table_block_holds_exactly_the_tables_numbers_and_nothing_else_changes(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("table dataset=toy"))

    changed = write_docs.write_docs([page], ctx_for(results))
    assert changed == [page]
    text = page.read_text()
    assert text.startswith(PROSE_BEFORE + "<!-- results:begin table dataset=toy -->\n")
    assert text.endswith("<!-- results:end -->" + PROSE_AFTER)
    assert "stale" not in text
    block = text[len(PROSE_BEFORE):-len(PROSE_AFTER)]

    header, *rows = table_rows(block)
    assert header == ["Run", "Seeds", "Many", "Few", "Overall", "F-measure", "Overall (paper)"]
    assert len(rows) == len(ROWS)
    for got, src in zip(rows, ROWS):
        row = dict(zip(HEADER, src))
        assert got[0] == row["Run"].replace("|", r"\|")
        assert got[1] == row["Seeds"]
        for title, cell in zip(header[2:], got[2:]):
            if title.endswith("(paper)"):
                assert cell == (f"{float(row[title]):.2f}" if row[title] else "–")
            else:
                assert cell == expected(row[title], row[f"{title} std"])
    # every number is the csv's, rounded: spot-check against the floats themselves
    assert rows[0][2] == "88.12 ± 0.50" and rows[0][4] == "60.82 ± 1.23" and rows[2][4] == "–"
    assert "commit `abc1234`, test machine" in block and "results/tables/toy.csv" in block


def test_columns_option_picks_and_orders_columns(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc('table dataset=toy columns="Run,Overall,Many"'))
    write_docs.write_docs([page], ctx_for(results))
    header, *rows = table_rows(page.read_text())
    assert header == ["Run", "Overall", "Many"]
    assert [r[1] for r in rows] == [expected(r[7], r[8]) for r in ROWS]


def test_unknown_column_is_an_error_naming_it(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("table dataset=toy columns=Run,Medium"))
    with pytest.raises(DocsError, match=r"no column\(s\) \['Medium'\]"):
        write_docs.write_docs([page], ctx_for(results))


def test_missing_table_is_a_clear_error_and_no_file_is_written(tmp_path):
    results = make_results(tmp_path)
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(doc("table dataset=toy"))
    bad.write_text(doc("table dataset=cifar10_lt"))
    before = good.read_text(), bad.read_text()
    with pytest.raises(DocsError) as err:
        write_docs.write_docs([good, bad], ctx_for(results))
    msg = str(err.value)
    assert "cifar10_lt.csv" in msg and "does not exist" in msg and "bad.md" in msg
    assert (good.read_text(), bad.read_text()) == before  # all or nothing


def test_main_exits_non_zero_with_one_line_on_stderr(tmp_path, capsys):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("table dataset=nope"))
    rc = write_docs.main([str(page), "--results", str(results), "--commit", "x", "--machine", "y"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("write_docs: error:") and "nope.csv" in err[0]


def test_rewriting_is_idempotent_and_check_reports_drift(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("table dataset=toy"))
    args = [str(page), "--results", str(results), "--commit", "abc1234", "--machine", "m"]
    assert write_docs.main(["--check", *args]) == 1  # stale block
    assert write_docs.main(args) == 0
    first = page.read_text()
    assert write_docs.main(["--check", *args]) == 0
    assert write_docs.main(args) == 0 and page.read_text() == first


def test_rule_and_train_time_blocks_sum_the_benchmark_files(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("rules") + doc("train-time dataset=toy"))
    write_docs.write_docs([page], ctx_for(results))
    text = page.read_text()
    rules = {r[0]: r[1:] for r in table_rows(text)[1:]}
    assert rules["train"] == ["3", "25.0", "19.5"]
    assert rules["table"] == ["1", "0.5", "0.5"]
    assert rules["total"][0] == "4" and math.isclose(float(rules["total"][1]), 25.5)
    runs = {r[0]: r[1:] for r in table_rows(text.split("<!-- results:end -->", 1)[1])[1:]}
    assert runs["plain"] == ["2", "11.0", "8.5"]  # mean over seeds
    assert runs["kt_wh"] == ["1", "3.0", "2.5"]


def test_bench_block_without_output_is_left_alone(tmp_path):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(doc("bench", body="measured earlier\n"))
    assert write_docs.write_docs([page], ctx_for(results)) == []
    (results / "bench").mkdir()
    (results / "bench" / "tsne.txt").write_text("# benchmarks/tsne.py · commit abc · m\nopenTSNE 1.0 s\n")
    write_docs.write_docs([page], ctx_for(results))
    text = page.read_text()
    assert "measured earlier" not in text and "openTSNE 1.0 s" in text and "commit abc" in text


@pytest.mark.parametrize("text, match", [
    ("<!-- results:begin table dataset=toy -->\nno end\n", "markers"),
    ("<!-- results:begin -->\n<!-- results:end -->\n", "names no block kind"),
    ("<!-- results:begin pie dataset=toy -->\n<!-- results:end -->\n", "unknown kind 'pie'"),
    ("<!-- results:begin table -->\n<!-- results:end -->\n", "dataset=... is required"),
    ("<!-- results:begin table dataset=toy -->\n<!-- results:begin rules -->\n<!-- results:end -->\n"
     "<!-- results:end -->\n", "has no results:end"),
])
def test_malformed_blocks_are_errors(tmp_path, text, match):
    results = make_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(DocsError, match=match):
        write_docs.write_docs([page], ctx_for(results))
    assert page.read_text() == text


def test_the_repositorys_docs_have_well_formed_blocks():
    """Every block in README.md and docs/*.md parses (its kind and options are known)."""
    for path in write_docs.default_files():
        text = path.read_text()
        specs = write_docs.BLOCK.findall(text)
        assert text.count("<!-- results:begin") == len(specs) == text.count("<!-- results:end -->"), path
        for _, spec, _, _ in specs:
            write_docs.parse_spec(spec)


def add_figures(results: Path, dataset: str) -> dict[str, bytes]:
    """Two distinct small PNG-like payloads under results/figures/<dataset>/."""
    payloads = {"sample_grid.png": b"\x89PNG\r\n\x1a\ngrid", "class_distribution.png": b"\x89PNG\r\n\x1a\nhist"}
    for name, data in payloads.items():
        path = results / "figures" / dataset / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return payloads


def test_default_datasets_figures_are_copied_into_docs_img(tmp_path, monkeypatch):
    results = make_results(tmp_path)
    (tmp_path / "config.yaml").write_text("datasets:\n  first_ds: {}\n  second_ds: {}\n")
    payloads = add_figures(results, "first_ds")
    add_figures(results, "second_ds")
    (results / "figures" / "second_ds" / "sample_grid.png").write_bytes(b"not the default dataset")
    (tmp_path / "README.md").write_text("# readme\n\n![glyphs](docs/img/sample_grid.png)\n")
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(write_docs, "ROOT", tmp_path)
    argv = ["--results", str(results), "--commit", "abc1234", "--machine", "m"]
    assert write_docs.main(["--check", *argv]) == 1  # the copies are missing: they would change
    assert not (tmp_path / "docs" / "img").exists()
    assert write_docs.main(argv) == 0
    for name, data in payloads.items():
        assert (tmp_path / "docs" / "img" / name).read_bytes() == data
    assert write_docs.main(["--check", *argv]) == 0  # up to date now


def test_missing_readme_figure_is_an_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    results = make_results(tmp_path)
    (tmp_path / "config.yaml").write_text("datasets:\n  first_ds: {}\n")
    (results / "figures" / "first_ds").mkdir(parents=True)
    (results / "figures" / "first_ds" / "class_distribution.png").write_bytes(b"hist")
    page = tmp_path / "README.md"
    page.write_text(doc("table dataset=toy"))
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(write_docs, "ROOT", tmp_path)
    assert write_docs.main(["--results", str(results), "--commit", "a", "--machine", "m"]) == 1
    assert "sample_grid.png" in capsys.readouterr().err
    assert page.read_text() == doc("table dataset=toy")  # nothing written
    assert not (tmp_path / "docs" / "img").exists()


def _metrics(path: Path, rows: list[tuple[str, str, str, float]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"dataset": "toy", "method": "m", "seed": 0, "split": "test", "setting": st, "group": g,
                   "metric": m, "value": v} for st, g, m, v in rows]).to_parquet(path)


def test_claims_block_pairs_seeds_and_states_each_verdict(tmp_path):
    results = tmp_path / "results"
    metrics = results / "metrics" / "toy"
    # plain error 0.30 / 0.40 / 0.50; mfm 0.25 / 0.45 / 0.45 -> differences -5, +5, -5: mixed, 2 of 3
    for seed, (p, m) in enumerate([(0.30, 0.25), (0.40, 0.45), (0.50, 0.45)]):
        _metrics(metrics / "plain" / f"seed{seed}.parquet", [("closed", "overall", "error", p),
                                                              ("closed", "few", "top1", 0.10)])
        _metrics(metrics / "mfm" / f"seed{seed}.parquet", [("closed", "overall", "error", m)])
        # metamodelnet's few-shot accuracy 0.2 above plain's in every seed: holds
        _metrics(metrics / "metamodelnet" / f"seed{seed}.parquet", [("closed", "few", "top1", 0.30)])
    _metrics(metrics / "plain" / "seed0.per_class.parquet", [])  # per-class files are not seeds
    out = write_docs.render(doc("claims dataset=toy"), ctx_for(results))
    rows = {r[0]: r for r in table_rows(out)[1:]}
    mfm = rows["MFM: error below plain"]
    assert mfm[2:] == ["38.33 ± 11.55", "40.00 ± 10.00", "-1.67 ± 5.77", "mixed (2/3 seeds)"]
    mmn = rows["MetaModelNet: few-shot accuracy above plain"]
    assert mmn[4:] == ["20.00 ± 0.00", "holds (3/3 seeds)"]
    assert rows["KT: ensemble's few-shot accuracy above the cosine classifier"][-1] == \
        "not measured (no kt_ensemble, kt_backbone results)"


def test_runs_option_picks_and_orders_rows_and_names_an_unknown_one(tmp_path):
    results = make_results(tmp_path)
    out = write_docs.render(doc('table dataset=toy columns=Run,Few runs="kt_wh;plain"'), ctx_for(results))
    assert table_rows(out) == [["Run", "Few"], ["kt_wh", "69.50"], ["plain", "0.00 ± 0.00"]]
    with pytest.raises(DocsError, match=r"no row\(s\) \['ghost'\]"):
        write_docs.render(doc('table dataset=toy runs="plain;ghost"'), ctx_for(results))


def test_a_collapsed_run_shows_no_number(tmp_path):
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "toy.csv").write_text("dataset,Run,Seeds,Collapsed,Overall,Overall std\n"
                                                "toy,plain,3,0,75.5,1.0\ntoy,openmax,3,3,,\n")
    rows = table_rows(write_docs.render(doc("table dataset=toy"), ctx_for(results)))
    assert rows == [["Run", "Seeds", "Collapsed", "Overall"], ["plain", "3", "0", "75.50 ± 1.00"],
                    ["openmax", "3", "3", "collapsed"]]
