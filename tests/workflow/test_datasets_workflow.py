"""End to end through the real workflow (Snakemake): the datasets part of the suite."""
from __future__ import annotations


import pandas as pd
import pytest
import yaml

from smk_runs import smoke_workflow

from generated_data import write_cifar10, write_cifar100, write_image_folder, write_lists

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layouts_run(tmp_path_factory):
    """One real workflow run over all three layouts: curation + 1 epoch + evaluation."""
    tmp = tmp_path_factory.mktemp("layouts")
    write_cifar10(tmp / "cifar", per_class_train=12, per_class_test=4)
    write_image_folder(tmp / "folder")
    write_cifar100(tmp / "cifar100", per_class_train=4, per_class_test=1)
    lists = write_lists(tmp / "lt")
    small = {"n_max": 10, "val_per_class": 1}
    cfg = {
        "seeds": [0], "device": "cpu", "open_threshold": 0.2,
        "datasets": {
            "cifar10_lt": {"source": {"name": "cifar10", "root": str(tmp / "cifar")},
                           "curation": {"profile": "exponential", "imbalance_factor": 10,
                                        "open_classes": ["c9"], **small}},
            "cifar100_lt": {"source": {"name": "cifar100", "root": str(tmp / "cifar100")},
                            "curation": {"profile": "exponential", "n_max": 3, "imbalance_factor": 3,
                                         "val_per_class": 1, "open_classes": ["f98", "f99"]}},
            "folder_lt": {"source": {"name": "image_folder", "root": str(tmp / "folder"), "image_size": 16},
                          "curation": {"profile": "pareto", "n_min": 2, "open_classes": ["class4"], **small}},
            "list_lt": {"source": {"name": "image_list", "root": str(tmp / "lt"), "lists": lists,
                                   "image_size": 16},
                        "curation": {"profile": "lists"}},
        },
        "runs": {"plain": {"method": "plain", "params": {"epochs": 1, "batch_size": 16, "backbone": "resnet10"}}},
        "tsne": {"runs": []},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    return smoke_workflow(tmp, tmp / "config.yaml")


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt", "folder_lt", "list_lt"])
def test_layouts_through_the_workflow(layouts_run, dataset):
    metrics = pd.read_parquet(layouts_run / f"results/metrics/{dataset}/plain/seed0.parquet")
    assert {"closed", "open"} <= set(metrics["setting"])
    preds = pd.read_parquet(layouts_run / f"results/predictions/{dataset}/plain/seed0.parquet")
    assert {"val", "test", "open"} <= set(preds["split"])
    md = (layouts_run / f"results/tables/{dataset}.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| plain ")]
    assert len(rows) == md.count("| Run ") >= 1  # one row in each of the table's sections
