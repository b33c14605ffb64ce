"""The workflow itself: DAGs of the default and a large config, lint, and one end-to-end smoke run
of the real workflow (tests/configs/smoke.yaml) whose every output is checked against its contract.

The smoke run happens once per session (module-scoped fixture) in a temporary directory.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake.utils import update_config

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
DEFAULT = ROOT / "config.yaml"
FMNIST = ROOT / "config" / "presets" / "fmnist_lt.yaml"  # the base large.yaml is layered on
LARGE = ROOT / "tests" / "configs" / "large.yaml"
SMOKE = ROOT / "tests" / "configs" / "smoke.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The smoke dataset (hand-computed): 8 known classes, n_i = floor(150 * 20^(-i/7)):
# 150/1.5337 = 97.8, /2.3522 = 63.8, /3.6076 = 41.6, /5.5330 = 27.1, /8.4857 = 17.7, /13.015 = 11.5, 150/20 = 7.5
SMOKE_DS = "fmnist_smoke"
SMOKE_TRAIN = [150, 97, 63, 41, 27, 17, 11, 7]
SMOKE_GROUPS = ["many"] + ["medium"] * 4 + ["few"] * 3
SMOKE_VAL, SMOKE_TEST, SMOKE_OPEN = 5, 40, 40  # per class; 2 open classes
SMOKE_THRESHOLD = 0.5
RUN_DIR = f"results/train/{SMOKE_DS}/plain/seed0"


def snakemake(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (SMOKE,),
              timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the workflow's Snakemake (the one of this interpreter) in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir)]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def check(proc: subprocess.CompletedProcess) -> str:
    out = output_of(proc)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def job_stats(out: str) -> dict[str, int]:
    """Parse the "Job stats" table of a dry run: {rule: count, ..., "total": n}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    stats = {}
    for line in lines[start + 3:]:  # skip the title, header and dashes
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m:
            break
        stats[m.group(1)] = int(m.group(2))
    return stats


def layered(*paths: Path) -> dict:
    """Config files merged the way Snakemake merges several --configfile arguments."""
    config: dict = {}
    for p in paths:
        update_config(config, yaml.safe_load(p.read_text()))
    return config


def expected_core_jobs(config: dict) -> dict[str, int]:
    """Jobs of the core rules for a config: per dataset x run x seed (train, evaluate),
    per dataset (curate, class distribution, sample grid, table), t-SNE of the first seed, summary, all."""
    runs = config["runs"]
    seeds = config.get("seeds", [0])
    n_run_seed = n_tsne = 0
    for ds in config["datasets"].values():
        ds_runs = ds.get("runs") or list(runs)
        n_run_seed += len(ds_runs) * len(seeds)
        n_tsne += len([r for r in config.get("tsne", {}).get("runs", []) if r in ds_runs])
    n_ds = len(config["datasets"])
    return {"curate": n_ds, "class_distribution": n_ds, "sample_grid": n_ds, "train": n_run_seed,
            "evaluate": n_run_seed, "table": n_ds, "summary": 1, "tsne": n_tsne, "all": 1}


# ------------------------------------------------------------------------------ DAG and lint


@pytest.mark.parametrize("configfiles", [(DEFAULT,), (FMNIST, LARGE)], ids=["default", "large"])
def test_dry_run_job_counts(tmp_path, configfiles):
    out = check(snakemake(tmp_path, "-n", configfiles=configfiles, timeout=300))
    stats = job_stats(out)
    expected = expected_core_jobs(layered(*configfiles))
    assert {rule: stats.get(rule, 0) for rule in expected} == expected
    assert "infer" not in stats  # inference runs inside each train job
    assert stats["total"] == sum(v for k, v in stats.items() if k != "total")
    if configfiles[-1] == LARGE:
        cfg = layered(*configfiles)
        assert len(cfg["datasets"]) == 4 and cfg["seeds"] == [0, 1, 2]
        assert stats["train"] == sum(len(d.get("runs") or cfg["runs"]) for d in cfg["datasets"].values()) * 3
        assert stats["total"] > 100


def test_lint_is_clean(tmp_path):
    out = check(snakemake(tmp_path, "--lint", configfiles=(DEFAULT,), timeout=300))
    assert "Congratulations" in out, out[-4000:]


def test_bad_config_fails_at_parse_time(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["runs"]["plain"]["params"]["lr"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", configfiles=(bad,), timeout=300)
    assert proc.returncode != 0
    assert "runs.plain" in output_of(proc) and "lr" in output_of(proc)


# ------------------------------------------------------------------------------ smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The real workflow on tests/configs/smoke.yaml, run once; returns its working directory."""
    workdir = tmp_path_factory.mktemp("smoke")
    old = os.umask(0o022)  # the usual umask: outputs must come out 0644, readable on a shared filesystem
    try:
        check(snakemake(workdir, "--cores", "2"))
    finally:
        os.umask(old)
    return workdir


def read(smoke: Path, rel: str) -> pd.DataFrame:
    return pd.read_parquet(smoke / rel)


@pytest.mark.slow
def test_smoke_every_output_exists(smoke):
    outputs = [
        f"results/data/{SMOKE_DS}/samples.parquet", f"results/data/{SMOKE_DS}/class_counts.parquet",
        f"{RUN_DIR}/model.pt", f"{RUN_DIR}/history.parquet", f"{RUN_DIR}/config.yaml",
        f"results/predictions/{SMOKE_DS}/plain/seed0.parquet", f"results/features/{SMOKE_DS}/plain/seed0.parquet",
        f"results/metrics/{SMOKE_DS}/plain/seed0.parquet", f"results/metrics/{SMOKE_DS}/plain/seed0.per_class.parquet",
        f"results/tables/{SMOKE_DS}.md", f"results/tables/{SMOKE_DS}.csv", f"results/tables/{SMOKE_DS}.tex",
        "results/tables/summary.parquet",
        f"results/figures/{SMOKE_DS}/class_distribution.png", f"results/figures/{SMOKE_DS}/tsne_plain_seed0.png",
        f"results/figures/{SMOKE_DS}/sample_grid.png",
    ]
    for rel in outputs:
        assert (smoke / rel).is_file() and (smoke / rel).stat().st_size > 0, rel
        assert stat.S_IMODE((smoke / rel).stat().st_mode) == 0o644, f"{rel}: mode {oct((smoke / rel).stat().st_mode)}"
    # every job left a log and a benchmark record
    for rule in ("curate", "class_distribution", "sample_grid", "train", "evaluate", "table", "summary", "tsne"):
        assert list((smoke / "results/logs" / rule).rglob("*.log")), rule
        assert list((smoke / "results/benchmarks" / rule).rglob("*.tsv")), rule
    # atomic writes and a finished run leave no temporary files or training checkpoint behind
    leftovers = [p for p in (smoke / "results").rglob("*") if p.name.endswith(".tmp") or p.name == "checkpoint.pt"]
    assert leftovers == []


@pytest.mark.slow
def test_smoke_samples_schema(smoke):
    s = read(smoke, f"results/data/{SMOKE_DS}/samples.parquet")
    assert list(s.columns) == ["sample_id", "source", "source_index", "split", "label", "class_name",
                               "train_count", "shot_group"]
    for col in ("source_index", "label", "train_count"):
        assert s[col].dtype == np.int64, col
    for col in ("sample_id", "source", "split", "class_name", "shot_group"):
        assert pd.api.types.is_string_dtype(s[col]), col
    assert s["sample_id"].is_unique
    assert set(s["split"]) == {"train", "val", "test", "open"}
    assert set(s["shot_group"]) == {"many", "medium", "few", "open"}
    assert s.groupby("split").size().to_dict() == {
        "train": sum(SMOKE_TRAIN), "val": 8 * SMOKE_VAL, "test": 8 * SMOKE_TEST, "open": 2 * SMOKE_OPEN}
    assert ((s["split"] == "open") == (s["label"] == -1)).all()
    assert set(s.loc[s["split"] == "open", "class_name"]) == {"Bag", "Ankle boot"}


@pytest.mark.slow
def test_smoke_class_counts(smoke):
    c = read(smoke, f"results/data/{SMOKE_DS}/class_counts.parquet")
    assert list(c.columns) == ["label", "class_name", "n_train", "n_val", "n_meta", "n_test", "shot_group",
                               "convention"]
    assert c["label"].tolist() == list(range(8))
    assert c["n_train"].tolist() == SMOKE_TRAIN
    assert c["n_val"].tolist() == [SMOKE_VAL] * 8 and c["n_test"].tolist() == [SMOKE_TEST] * 8
    assert c["shot_group"].tolist() == SMOKE_GROUPS


@pytest.mark.slow
def test_smoke_model_checkpoint(smoke):
    import torch

    ckpt = torch.load(smoke / RUN_DIR / "model.pt", map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "seed", "method", "info"} <= ckpt.keys()
    assert ckpt["method"] == "plain" and ckpt["seed"] == 0 and ckpt["epoch"] == 2
    assert ckpt["config"]["epochs"] == 2 and ckpt["config"]["batch_size"] == 64
    assert ckpt["info"]["num_classes"] == 8 and ckpt["info"]["class_counts"] == SMOKE_TRAIN
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())


@pytest.mark.slow
def test_smoke_predictions_come_from_the_saved_model(smoke):
    """Rebuild the network from model.pt, run it on the test split: same predictions as the parquet."""
    from longtail.data import load_split
    from longtail.device import select_device
    from longtail.pipeline import infer, load_trained
    from longtail.sources import load_source
    import torch

    samples = read(smoke, f"results/data/{SMOKE_DS}/samples.parquet")
    method, model, info = load_trained(torch.load(smoke / RUN_DIR / "model.pt", map_location="cpu",
                                                  weights_only=False))
    split = load_split(load_source("fashion_mnist"), samples, "test")
    logits, _ = infer(method, model, split, info, select_device("cpu", 1))
    preds = read(smoke, f"results/predictions/{SMOKE_DS}/plain/seed0.parquet")
    test = preds[preds["split"] == "test"].set_index("sample_id").loc[split.sample_ids]
    assert (test["pred"].to_numpy() == logits.argmax(1)).all()


@pytest.mark.slow
def test_smoke_history_and_config(smoke):
    h = read(smoke, f"{RUN_DIR}/history.parquet")
    assert list(h.columns) == ["epoch", "loss", "train_acc", "val_acc", "lr", "seconds", "selected"]
    assert h["epoch"].tolist() == [1, 2]  # one row per epoch
    assert h["selected"].tolist() == [False, True]  # select: last (the default) keeps the last epoch
    assert np.isfinite(h[["loss", "train_acc", "val_acc", "lr", "seconds"]].to_numpy()).all()
    cfg = yaml.safe_load((smoke / RUN_DIR / "config.yaml").read_text())
    assert cfg["run"] == "plain" and cfg["method"] == "plain" and cfg["seed"] == 0
    assert cfg["config"]["epochs"] == 2 and cfg["config"]["backbone"] == "lenet"


@pytest.mark.slow
def test_smoke_predictions_schema(smoke):
    p = read(smoke, f"results/predictions/{SMOKE_DS}/plain/seed0.parquet")
    assert list(p.columns) == ["sample_id", "split", "label", "pred", "confidence", "topk", "topk_prob"]
    assert p["label"].dtype == np.int64 and p["pred"].dtype == np.int64 and p["confidence"].dtype == np.float64
    assert p.groupby("split").size().to_dict() == {"val": 8 * SMOKE_VAL, "test": 8 * SMOKE_TEST, "open": 2 * SMOKE_OPEN}
    assert ((p["split"] == "open") == (p["label"] == -1)).all()
    assert p["pred"].between(0, 7).all()
    assert p["confidence"].between(0, 1).all()
    topk, topk_prob = np.stack(p["topk"].to_numpy()), np.stack(p["topk_prob"].to_numpy())
    assert topk.shape == (len(p), 5) and topk_prob.shape == (len(p), 5)
    assert ((topk_prob >= 0) & (topk_prob <= 1)).all() and (np.diff(topk_prob, axis=1) <= 0).all()
    assert (topk[:, 0] == p["pred"].to_numpy()).all()
    np.testing.assert_allclose(topk_prob[:, 0], p["confidence"].to_numpy(), rtol=1e-6)
    samples = read(smoke, f"results/data/{SMOKE_DS}/samples.parquet")
    want = samples[samples["split"].isin(["val", "test", "open"])]
    assert set(p["sample_id"]) == set(want["sample_id"])


@pytest.mark.slow
def test_smoke_features_schema(smoke):
    t = pq.read_table(smoke / f"results/features/{SMOKE_DS}/plain/seed0.parquet")
    assert t.column_names == ["sample_id", "split", "label", "feature"]
    ftype = t.schema.field("feature").type
    assert pa.types.is_fixed_size_list(ftype) and ftype.list_size > 0
    assert ftype.value_type == pa.float32()
    samples = read(smoke, f"results/data/{SMOKE_DS}/samples.parquet")
    assert t.num_rows == len(samples)  # every split, train included (classifier-stage methods use it)
    assert set(t.column("split").to_pylist()) == {"train", "val", "test", "open"}
    x = t.column("feature").combine_chunks().flatten().to_numpy()
    assert np.isfinite(x).all()


@pytest.mark.slow
def test_smoke_metrics_long_form(smoke):
    m = read(smoke, f"results/metrics/{SMOKE_DS}/plain/seed0.parquet")
    assert list(m.columns) == ["dataset", "method", "seed", "split", "setting", "group", "metric", "value"]
    assert set(m["dataset"]) == {SMOKE_DS} and set(m["method"]) == {"plain"} and set(m["seed"]) == {0}
    assert {"many", "medium", "few", "overall"} <= set(m["group"])
    assert {"closed", "open"} <= set(m["setting"])
    test_closed = m[(m["split"] == "test") & (m["setting"] == "closed") & (m["metric"] == "top1")]
    assert set(test_closed["group"]) >= {"many", "medium", "few", "overall"}
    assert ((m["metric"] == "f_measure") & (m["setting"] == "open")).any()
    fractions = m[m["metric"].isin(["top1", "error", "f_measure", "open_reject_rate", "macro_f1"])]
    assert fractions["value"].between(0, 1).all()
    # consistent with the predictions it was computed from
    p = read(smoke, f"results/predictions/{SMOKE_DS}/plain/seed0.parquet")
    t = p[p["split"] == "test"]
    top1 = test_closed.set_index("group")["value"]
    assert top1["overall"] == pytest.approx((t["pred"] == t["label"]).mean())
    o = p[p["split"] == "open"]
    reject = m.loc[m["metric"] == "open_reject_rate", "value"]
    assert reject.tolist() == [pytest.approx((o["confidence"] < SMOKE_THRESHOLD).mean())]  # config's threshold


@pytest.mark.slow
def test_smoke_per_class(smoke):
    pc = read(smoke, f"results/metrics/{SMOKE_DS}/plain/seed0.per_class.parquet")
    assert {"label", "n", "correct", "accuracy", "class_name", "n_train", "shot_group"} <= set(pc.columns)
    assert pc["label"].tolist() == list(range(8))
    assert pc["n"].tolist() == [SMOKE_TEST] * 8
    assert pc["n_train"].tolist() == SMOKE_TRAIN
    np.testing.assert_allclose(pc["accuracy"], pc["correct"] / pc["n"])


@pytest.mark.slow
def test_smoke_tables(smoke):
    md = (smoke / f"results/tables/{SMOKE_DS}.md").read_text()
    assert re.search(r"^\|\s*plain\s*\|", md, re.M), md  # the run's row
    for word in ("F-measure", "Many", "Medium", "Few", "Overall", f"< {SMOKE_THRESHOLD}"):
        assert word in md, word
    csv = pd.read_csv(smoke / f"results/tables/{SMOKE_DS}.csv")
    assert csv["Run"].tolist() == ["plain"]
    assert {"Many", "Medium", "Few", "Overall", "F-measure"} <= set(csv.columns)
    tex = (smoke / f"results/tables/{SMOKE_DS}.tex").read_text()
    assert "tabular" in tex and "plain" in tex
    summary = read(smoke, "results/tables/summary.parquet")
    assert {"dataset", "run", "metric", "mean", "std"} <= set(summary.columns)
    assert set(summary["dataset"]) == {SMOKE_DS} and set(summary["run"]) == {"plain"}
    # the table shows the summary's test top-1 overall, in percent
    row = summary[(summary["split"] == "test") & (summary["setting"] == "closed") & (summary["group"] == "overall")
                  & (summary["metric"] == "top1")]
    assert csv["Overall"].iloc[0] == pytest.approx(row["mean"].iloc[0])


@pytest.mark.slow
def test_smoke_figures_are_png(smoke):
    for name in ("class_distribution.png", "tsne_plain_seed0.png"):
        data = (smoke / f"results/figures/{SMOKE_DS}" / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 5000, name  # a real plot, not an empty canvas


@pytest.mark.slow
def test_smoke_report(smoke):
    report = smoke / "report.html"
    check(snakemake(smoke, "--report", str(report), timeout=300))
    html = report.read_text(errors="replace")
    assert "<html" in html.lower()
    assert f"{SMOKE_DS}.md" in html and "tsne_plain_seed0.png" in html and "class_distribution.png" in html


@pytest.mark.slow
def test_smoke_figures_target_never_retrains(smoke):
    # up to date after the run: nothing to do (no provenance-triggered reruns either)
    out = check(snakemake(smoke, "-n", "figures", timeout=300))
    assert "Nothing to be done" in out, out[-3000:]
    # a lost figure is re-rendered from parquet: only figure jobs, no training/inference
    png = smoke / f"results/figures/{SMOKE_DS}/tsne_plain_seed0.png"
    away = png.with_name("moved-away.png")
    os.replace(png, away)
    try:
        stats = job_stats(check(snakemake(smoke, "-n", "figures", timeout=300)))
    finally:
        os.replace(away, png)  # same inode and mtime: the run stays complete
    assert stats.get("tsne") == 1
    assert not {"train", "infer", "curate", "evaluate"} & set(stats)
