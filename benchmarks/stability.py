"""Stability of the default recipes: every run of a config x seeds x two curations (the dataset's
own and a variant: Pareto profile, permuted class order, other open classes), through the real
workflow. Prints, per run and curation, the divergences (a non-finite training loss in
history.parquet), the collapsed seeds (``longtail.metrics.collapse_reason`` on the predictions:
val accuracy at chance or one predicted class) and the spread of test top-1 over the seeds, then the
totals. Exits 1 when any run diverged or collapsed (the target is 0).

    .venv/bin/python benchmarks/stability.py [--configfile config.yaml] [--dataset NAME]
        [--runs plain mfm ...] [--seeds 0 1 2] [--cores 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
from longtail.metrics import collapse_reason, training_divergence  # noqa: E402
from longtail.sources import load_source  # noqa: E402

SMK = str(Path(sys.executable).with_name("snakemake"))
VARIANT = "_variant"


def variant_curation(curation: dict, class_names: list[str]) -> dict:
    """The variant: Pareto profile (ImageNet-LT's alpha) over the same size range, class order
    permuted with another seed, and as many open classes as before taken from the other end of
    the class list (so the held-out classes differ)."""
    cur = copy.deepcopy(curation)
    n_open = len(cur.get("open_classes") or [])
    others = [c for c in reversed(class_names) if c not in set(cur.get("open_classes") or [])]
    cur.update(profile="pareto", pareto_alpha=7.75, n_min=max(int(cur.get("n_min", 5)), 5),
               class_order="permuted", open_classes=others[:n_open], seed=int(cur.get("seed", 0)) + 1)
    cur.pop("imbalanced_tests", None)
    return cur


def stability_config(cfg: dict, dataset: str, runs: list[str], seeds: list[int]) -> dict:
    """``cfg`` reduced to ``dataset`` and its variant, ``runs`` (with their ``init_from`` parents)
    and ``seeds``; no figures."""
    ds = cfg["datasets"][dataset]
    names = list(load_source(ds["source"]["name"], {k: v for k, v in ds["source"].items() if k != "name"}).class_names)
    keep, todo = [], list(runs)
    while todo:
        r = todo.pop(0)
        if r not in keep:
            keep.append(r)
            parent = cfg["runs"][r].get("init_from")
            todo += [parent] if parent else []
    variant = {**copy.deepcopy(ds), "curation": variant_curation(ds["curation"], names),
               "description": f"{dataset} variant: pareto, permuted classes, other open classes"}
    out = {k: v for k, v in cfg.items() if k not in ("datasets", "runs", "paper_results")}
    out.update(seeds=seeds, datasets={dataset: ds, dataset + VARIANT: variant},
               runs={r: cfg["runs"][r] for r in cfg["runs"] if r in keep}, paper_results={})
    out["tsne"] = {**cfg.get("tsne", {}), "runs": []}
    return out


def diverged(history: pd.DataFrame) -> bool:
    """A non-finite training loss in an epoch that trained (:func:`longtail.metrics.training_divergence`)."""
    return training_divergence(history) is not None


def outcome(workdir: Path, dataset: str, run: str, seed: int, num_classes: int) -> dict:
    """diverged / collapsed / test top-1 of one trained run."""
    hist = pd.read_parquet(workdir / f"results/train/{dataset}/{run}/seed{seed}/history.parquet")
    pred = pd.read_parquet(workdir / f"results/predictions/{dataset}/{run}/seed{seed}.parquet")
    test = pred[(pred["split"] == "test") & (pred["label"] >= 0)]
    return {"diverged": diverged(hist),
            "collapse": collapse_reason(pred, num_classes),
            "top1": float((test["label"] == test["pred"]).mean()) * 100}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--dataset", help="the dataset to vary (default: the config's first)")
    ap.add_argument("--runs", nargs="*", help="runs to check (default: every run)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="working folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.configfile.read_text())
    dataset = args.dataset or next(iter(cfg["datasets"]))
    runs = args.runs or list(cfg["runs"])
    unknown = sorted(set(runs) - set(cfg["runs"]))
    if unknown:
        print(f"stability: unknown runs {unknown}; the config has {list(cfg['runs'])}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stability-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "stability.yaml"
        conf.write_text(yaml.safe_dump(stability_config(cfg, dataset, runs, args.seeds), sort_keys=False))
        targets = [f"results/predictions/{d}/{r}/seed{s}.parquet"
                   for d in (dataset, dataset + VARIANT) for r in runs for s in args.seeds]
        proc = subprocess.run([SMK, *targets, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
                               "--configfile", str(conf), "--cores", str(args.cores), "--keep-going", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rows = []
        for d in (dataset, dataset + VARIANT):
            counts = work / f"results/data/{d}/class_counts.parquet"
            c = len(pd.read_parquet(counts)) if counts.exists() else 0
            for r in runs:
                for s in args.seeds:
                    try:
                        rows.append({"dataset": d, "run": r, "seed": s, **outcome(work, d, r, s, c)})
                    except FileNotFoundError:  # the job failed: a crash (e.g. NaN guard) counts as divergence
                        rows.append({"dataset": d, "run": r, "seed": s, "diverged": True,
                                     "collapse": "no outputs (the job failed)", "top1": np.nan})
        if proc.returncode and not rows:
            print(proc.stdout[-3000:], file=sys.stderr)
    table = pd.DataFrame(rows)
    print(f"{'dataset':<24} {'run':<22} diverged collapsed  top-1 min / mean / max (std) over seeds {args.seeds}")
    for (d, r), g in table.groupby(["dataset", "run"], sort=False):
        t = g["top1"].dropna()
        spread = f"{t.min():5.1f} / {t.mean():5.1f} / {t.max():5.1f} ({t.std(ddof=1) if len(t) > 1 else float('nan'):.1f})" if len(t) else "-"
        print(f"{d:<24} {r:<22} {int(g['diverged'].sum()):>8} {int(g['collapse'].notna().sum()):>9}  {spread}")
        for _, row in g[g["collapse"].notna()].iterrows():
            print(f"    seed {row['seed']}: {row['collapse']}")
    n_div, n_col = int(table["diverged"].sum()), int(table["collapse"].notna().sum())
    print(f"total: {len(table)} trained runs, {n_div} diverged, {n_col} collapsed (target 0)")
    return 1 if n_div or n_col else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
