"""Every registered method, end to end on a tiny dataset: it builds, fits one epoch, infers, and
writes a predictions table that passes the contract.

Cases come from the registry (``available_methods()``) and the run entries of
tests/configs/smoke*.yaml: each distinct parameter set a smoke config gives a method is one case
(its ablations and variants included), and a method no smoke config runs gets its defaults.
Epochs and optimisation steps are cut to one. A method that starts from another run gets the
parent its run entry names (``init_from``: a plain LeNet-5, KT's cosine-head backbone, ...),
trained once per module, with its features cached through ``pipeline.infer`` and the features
contract as the workflow does; a method without a smoke entry gets its family's parent, else a
plain one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from longtail import contracts as C
from longtail.curation import CurationConfig, curate
from longtail.data import load_split
from longtail.device import select_device
from longtail.io import torch_save, write_parquet
from longtail.methods import available_methods, config_class, method_class
from longtail.pipeline import infer, load_trained, train
from longtail.sources import SourceData

ROOT = Path(__file__).resolve().parents[2]
SMOKE_CONFIGS = sorted((ROOT / "tests" / "configs").glob("smoke*.yaml"))
TINY = {"epochs": 1, "steps": 1}  # one epoch / one optimisation step, where the config has the key
# parameters naming a run of another dataset: the workflow wires those, not a single-run test
CROSS_RUN_PARAMS = ("modulator_from",)
DEFAULT_PARENT = {"method": "plain", "params": {"batch_size": 32}}

# 5 known classes with 120, 61, 31, 15, 8 training images (the smoke configs' thresholds: KT's
# k up to 100, MetaModelNet's head n > 32, the few-shot cut at 20 fall between them), 1 open
# class; 28x28 grey images whose brightness and one bright row depend on the class, plus noise.
N_CLASSES, N_SOURCE_CLASSES = 5, 6
CURATION = dict(profile="exponential", n_max=120, imbalance_factor=15, open_classes=["c5"], val_per_class=3,
                meta_per_class=3, test_per_class=4, open_per_class=4)


def tiny_source() -> SourceData:
    rng = np.random.default_rng(0)
    images, labels = {}, {}
    for split, per_class in (("train", 130), ("test", 6)):
        y = rng.permutation(np.repeat(np.arange(N_SOURCE_CLASSES), per_class))
        x = rng.normal(0, 25, (len(y), 28, 28)) + (40 + 35 * y)[:, None, None]
        x[np.arange(len(y)), 4 * y + 2, :] += 60  # a class-specific bright row
        images[split], labels[split] = np.clip(x, 0, 255).astype(np.uint8), y
    return SourceData("tiny", tuple(f"c{i}" for i in range(N_SOURCE_CLASSES)), labels, images=images)


def smoke_runs() -> list[tuple[str, str, dict]]:
    """(config file stem, run name, run entry) of every smoke config, in file order."""
    out = []
    for path in SMOKE_CONFIGS:
        for run, entry in (yaml.safe_load(path.read_text()).get("runs") or {}).items():
            out.append((path.stem, run, {**entry, "params": dict(entry.get("params") or {})}))
    return out


def tiny(method: str, params: Mapping) -> dict:
    fields = set(config_class(method).__dataclass_fields__)
    return {**params, **{k: v for k, v in TINY.items() if k in fields}}


def family(method: str) -> str:
    return method_class(method).__module__.split(".")[-2]


def _key(method: str, params: Mapping) -> str:
    return json.dumps([method, params], sort_keys=True, default=str)


def cases() -> list:
    """One pytest param per (registered method, distinct smoke parameter set); defaults otherwise."""
    runs = smoke_runs()
    entries = {(stem, run): entry for stem, run, entry in runs}
    # a family's parent, for its methods that no smoke config runs
    family_parent = {}
    for stem, _, entry in runs:
        if entry.get("init_from") and entry["method"] in available_methods():
            family_parent.setdefault(family(entry["method"]), entries[(stem, entry["init_from"])])
    out, seen, ids = [], set(), set()
    for method in available_methods():
        mine = [(stem, run, e) for stem, run, e in runs if e["method"] == method
                and not any(k in e["params"] for k in CROSS_RUN_PARAMS)]
        if not mine:
            mine = [("defaults", "defaults", {"method": method, "params": {}})]
        for stem, run, entry in mine:
            params = tiny(method, entry["params"])
            if _key(method, params) in seen:
                continue
            seen.add(_key(method, params))
            parent = None
            if method_class(method).requires_parent:
                parent = (entries[(stem, entry["init_from"])] if entry.get("init_from")
                          else family_parent.get(family(method), DEFAULT_PARENT))
                parent = {"method": parent["method"], "params": tiny(parent["method"], parent.get("params") or {})}
            name = method if len(mine) == 1 else f"{method}-{run}"
            name = f"{name}@{stem}" if name in ids else name
            ids.add(name)
            out.append(pytest.param(method, params, parent, id=name))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, SourceData]:
    source = tiny_source()
    samples, _ = curate(source, CurationConfig.from_dict(CURATION), seed=0)
    return samples, source


@pytest.fixture(scope="module")
def device():
    return select_device("cpu", 1)


def run_method(method: str, params: Mapping, samples: pd.DataFrame, source: SourceData, device, out: Path,
               parent: Mapping | None = None, parent_features: C.FeatureSet | None = None) -> dict:
    """Train (resumable checkpoint in ``out``) and save model.pt as the train rule does; return it."""
    ckpt, history = train(method, params, samples, source, seed=0, device=device, checkpoint=out / "checkpoint.pt",
                          parent=parent, parent_features=parent_features, progress=False)
    C.validate_history(history, f"{method} history")
    torch_save(ckpt, out / "model.pt")
    return torch.load(out / "model.pt", map_location="cpu", weights_only=False)


def write_outputs(ckpt: Mapping, samples: pd.DataFrame, source: SourceData, device, out: Path) -> None:
    """Predictions and features of every split, written as the infer rule does."""
    method, model, info = load_trained(ckpt)
    preds, feats = [], []
    present = set(samples["split"])
    for name in (s for s in C.FEATURE_SPLITS if s in present):
        split = load_split(source, samples, name)
        logits, emb = infer(method, model, split, info, device)
        if name in C.PREDICTION_SPLITS:
            preds.append(method.predictions(split, logits))
        feats.append(C.features_table(split, emb))
    write_parquet(pd.concat(preds, ignore_index=True), out / "predictions.parquet")
    pq.write_table(pa.concat_tables(feats), out / "features.parquet")


@pytest.fixture(scope="module")
def parents(data, device, tmp_path_factory):
    """Parent runs by (method, params), trained once: (model.pt dict, cached features)."""
    cache: dict[str, tuple[dict, C.FeatureSet]] = {}

    def get(spec: Mapping) -> tuple[dict, C.FeatureSet]:
        key = _key(spec["method"], spec["params"])
        if key not in cache:
            samples, source = data
            out = tmp_path_factory.mktemp("parent")
            ckpt = run_method(spec["method"], spec["params"], samples, source, device, out)
            write_outputs(ckpt, samples, source, device, out)
            cache[key] = ckpt, C.read_features(out / "features.parquet")
        return cache[key]

    return get


@pytest.mark.parametrize("method, params, parent", cases())
def test_method_trains_infers_and_writes_valid_predictions(method: str, params: dict, parent: Any, data, device,
                                                           parents, tmp_path):
    samples, source = data
    parent_ckpt, parent_features = parents(parent) if parent else (None, None)
    ckpt = run_method(method, params, samples, source, device, tmp_path, parent_ckpt, parent_features)
    assert ckpt["method"] == method and ckpt["info"]["num_classes"] == N_CLASSES
    write_outputs(ckpt, samples, source, device, tmp_path)

    preds = C.read_predictions(tmp_path / "predictions.parquet")  # raises unless it follows the contract
    want = samples[samples["split"].isin(C.PREDICTION_SPLITS)]
    assert sorted(preds["sample_id"]) == sorted(want["sample_id"])
    assert preds["pred"].between(-1 if method == "openmax" else 0, N_CLASSES - 1).all()  # OpenMax rejects: -1
    assert np.isfinite(preds["confidence"]).all() and preds["confidence"].between(0, 1).all()
    features = C.read_features(tmp_path / "features.parquet")
    assert set(features) == set(samples["split"]) and all(np.isfinite(x).all() for x, _, _ in features.values())


def test_every_registered_method_has_a_case():
    assert {c.values[0] for c in cases()} == set(available_methods())


def test_plain_freeze_backbone_trains_the_head_alone_and_keeps_batchnorm_statistics():
    from longtail.data import DatasetInfo
    from longtail.methods import create_method
    from longtail.trainer import TrainBatch

    info = DatasetInfo(num_classes=3, in_channels=1, class_counts=(8, 4, 2))
    torch.manual_seed(0)
    method = create_method("plain", {"backbone": "lenet5_bn", "freeze_backbone": True})
    model = method.build_model(info)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    params = method.trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.head.parameters()}
    opt = torch.optim.SGD(params, lr=0.5)
    model.train()  # as the trainer does each epoch
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])

    def ce(logits, target, epoch):
        return torch.nn.functional.cross_entropy(logits, target)

    loss, _ = method.training_loss(model, TrainBatch(x, y, np.arange(6), 0, 0, 0.5, ce))
    loss.backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():  # weights and BN running statistics unchanged
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.head.weight, head_before)
    # the default (joint training) updates BN statistics in train mode
    joint = create_method("plain", {"backbone": "lenet5_bn"})
    net = joint.build_model(info)
    rm = [v.clone() for k, v in net.backbone.state_dict().items() if k.endswith("running_mean")]
    net.train()
    joint.training_loss(net, TrainBatch(x, y, np.arange(6), 0, 0, 0.5, ce))
    assert any(not torch.equal(a, b) for a, b in
               zip(rm, [v for k, v in net.backbone.state_dict().items() if k.endswith("running_mean")]))
