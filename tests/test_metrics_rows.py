"""Every number in metrics.json says which rows it was computed on (issue 23): each block of metrics
(headline, decodings, baselines, per fold, repeats, calibration, a head's extra comparison) carries a
``rows`` naming them, as docs/metrics.md lists."""

import pytest
from test_heads_support import planted, write_cache, write_pairs

from tagcons.heads import FitHeadConfig, fit_head

LOGREG = {"C": 1.0, "threads": 1}  # a fixed C: no inner search


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_rows")
    data = planted(n_images=24, per_image=8, dim=8, seed=6)
    return {"root": root, "pairs": write_pairs(data, root / "pairs.csv"), "cache": write_cache(data, root / "c.h5")}


def _fit(files, out, **kw):
    return fit_head(FitHeadConfig(data=files["pairs"], cache=files["cache"], out=files["root"] / out, **kw)).metrics


def metric_blocks(value, path=()):
    """(path, dict) of every dict in metrics.json holding a metric value (a number, not an interval)."""
    if isinstance(value, dict):
        if isinstance(value.get("accuracy"), float) or isinstance(value.get("ece"), float):
            yield path, value
        for key, inner in value.items():
            yield from metric_blocks(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from metric_blocks(inner, (*path, i))


def unnamed(metrics: dict) -> list:
    """Metric blocks without a ``rows`` of their own or, for calibration's before/after and the repeats'
    mean and sd, of the block holding them."""
    blocks = dict(metric_blocks(metrics))
    return [path for path, block in blocks.items() if "rows" not in block and "rows" not in _parent(metrics, path)]


def _parent(metrics: dict, path: tuple) -> dict:
    for key in path[:-1]:
        metrics = metrics[key]
    return metrics if len(path) else {}


def test_every_metric_block_of_a_split_run_names_its_rows(files):
    metrics = _fit(files, "split", head="logreg", head_params=LOGREG, repeats=2)
    assert unnamed(metrics) == []
    assert metrics["rows"] == "test" and metrics["decodings"]["argmax"]["rows"] == "test"
    assert {b["rows"] for b in metrics["baselines"].values()} == {"test"}
    assert metrics["repeats"]["per_seed"][1]["rows"] == "test of seed 43's split"


def test_every_metric_block_of_a_cv_run_says_out_of_fold(files):
    metrics = _fit(files, "cv", head="logreg", head_params=LOGREG, cv=3)
    assert unnamed(metrics) == []
    assert metrics["rows"] == "out-of-fold" and metrics["decodings"]["argmax"]["rows"] == "out-of-fold"
    assert {b["rows"] for b in metrics["baselines"].values()} == {"out-of-fold"}
    assert [fold["rows"] for fold in metrics["per_fold"]] == ["test of fold 1", "test of fold 2", "test of fold 3"]


def test_a_heads_extra_comparison_names_its_rows(files):
    metrics = _fit(files, "threshold", head="threshold")
    assert unnamed(metrics) == [] and metrics["study_fixed_interval"]["rows"] == "test"
