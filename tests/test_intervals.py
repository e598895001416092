"""Image-clustered bootstrap intervals and the paired comparison of runs (`tagcons compare`)."""

import json

import numpy as np
import pandas as pd
import pytest

from tagcons.data.pairs import PairTable
from tagcons.evaluate.compare import compare_runs, paired_differences, render_markdown
from tagcons.evaluate.image_metrics import image_counts, image_weights, metrics_from_confusion
from tagcons.evaluate.intervals import (
    METHOD,
    aligned_counts,
    bootstrap_intervals,
    paired_difference,
    repeat_summary,
    resample,
)
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.rundir import write_config, write_evaluation
from tagcons.evaluate.simultaneous import table_differences


def _noisy(truth: np.ndarray, correct_share: float, rng) -> np.ndarray:
    keep = rng.random(len(truth)) < correct_share
    return np.where(keep, truth, rng.integers(1, 6, len(truth)))


def test_metrics_from_confusion_equal_compute_metrics():
    rng = np.random.default_rng(3)
    for trial in range(12):
        n = int(rng.integers(5, 200))
        y = rng.integers(1, 6, n)
        pred = _noisy(y, 0.5, rng) if trial % 3 else np.full(n, 4)  # a constant prediction: Spearman undefined
        counts = image_counts(y, pred, rng.integers(0, 9, n))
        ours = metrics_from_confusion(counts.confusion.sum(axis=0))
        expected = compute_metrics(y, pred)
        for name, value in ours.items():
            assert (expected[name] is None and np.isnan(value)) or value == pytest.approx(expected[name]), name


def test_image_weights_draw_whole_images():
    weights = image_weights(7, resamples=50, seed=1)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all() and weights.min() >= 0


def test_interval_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 6, 400)
    pred = _noisy(y, 0.6, rng)
    images = np.repeat(np.arange(40), 10)
    block = bootstrap_intervals(y, pred, images, rng.dirichlet(np.ones(5), 400), seed=5)
    point = compute_metrics(y, pred, rng.dirichlet(np.ones(5), 400))
    assert block["n_test_images"] == 40 and block["bootstrap"] == {
        "resamples": 1000,
        "seed": 5,
        "unit": "image",
        "method": METHOD,
        "undefined": {name: 0 for name in block["ci95"]},
    }
    for name in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "weighted_f1",
        "mae",
        "qwk",
        "spearman",
        "adjacent_accuracy",
    ):
        low, high = block["ci95"][name]
        assert low < point[name] < high, name


def test_resamples_images_not_pairs():
    """Every pair of an image identical: the interval is that of one row per image, and wider than
    the (wrong) interval that treats the pairs as independent."""
    rng = np.random.default_rng(2)
    y_image, pred_image = rng.integers(1, 6, 30), rng.integers(1, 6, 30)
    y, pred, images = np.repeat(y_image, 12), np.repeat(pred_image, 12), np.repeat(np.arange(30), 12)
    clustered = bootstrap_intervals(y, pred, images, seed=9)["ci95"]
    one_per_image = bootstrap_intervals(y_image, pred_image, np.arange(30), seed=9)["ci95"]
    as_if_independent = bootstrap_intervals(y, pred, np.arange(len(y)), seed=9)["ci95"]
    for name in ("accuracy", "macro_f1", "qwk"):
        assert clustered[name] == pytest.approx(one_per_image[name])
        width = clustered[name][1] - clustered[name][0]
        assert width > 2 * (as_if_independent[name][1] - as_if_independent[name][0]), name


def test_repeat_summary_reports_mean_sd_and_a_pooled_interval():
    rng = np.random.default_rng(4)
    outcomes = []
    for _ in range(3):
        y = rng.integers(1, 6, 200)
        outcomes.append((y, _noisy(y, 0.5, rng), np.repeat(np.arange(20), 10), None))
    summary = repeat_summary(outcomes, [1, 2, 3])
    accuracies = [s["accuracy"] for s in summary["per_seed"]]
    assert summary["seeds"] == [1, 2, 3] and summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["sd"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    low, high = summary["ci95_pooled"]["accuracy"]
    assert low < min(accuracies) <= max(accuracies) < high


def _table(images, texts, labels) -> PairTable:
    frame = pd.DataFrame({"image": images, "text": texts, "label": labels, "line": np.arange(len(labels)) + 2})
    return PairTable(frame, "pairs.csv")


def _run(root, name, table: PairTable, pred, split="images", seed=None) -> str:
    run = root / name
    settings = {"head": name, "split": split, "features": "concat", "backbone": "tiny"}
    write_config(run, {**settings, **({} if seed is None else {"seed": seed})}, "fp")
    write_evaluation(run, table, pred, None, {"n_train": 100})
    return run


@pytest.fixture
def shared_rows():
    rng = np.random.default_rng(11)
    images = np.repeat([f"img_{i:03d}.png" for i in range(60)], 8)
    labels = rng.integers(1, 6, len(images))
    return _table(images, [f"t{i}" for i in range(len(images))], labels), rng


def test_paired_comparison_flags_a_planted_difference_and_not_a_null_one(tmp_path, shared_rows):
    table, rng = shared_rows
    truth = table.labels.astype(int)
    runs = [
        _run(tmp_path, "strong", table, _noisy(truth, 0.7, rng)),
        _run(tmp_path, "weak", table, _noisy(truth, 0.3, rng)),
        _run(tmp_path, "strong_too", table, _noisy(truth, 0.7, rng)),
    ]
    (group,) = paired_differences(runs)
    best = group.differences["macro_f1"]["best"]
    assert best in ("strong", "strong_too")
    other_strong = ({"strong", "strong_too"} - {best}).pop()
    planted = group.difference("macro_f1", "weak")
    null = group.difference("macro_f1", other_strong)
    assert planted.significant and planted.difference < 0 and planted.p_value < 0.01
    assert not null.significant and null.ci95[0] < 0 < null.ci95[1] and null.p_value > 0.05


def test_compare_states_and_uses_simultaneous_intervals_over_all_pairs(tmp_path, shared_rows):
    """Each run against the best with the table's max-|t| intervals (issue 23: one-at-a-time tests inflated
    the false claims); the procedure is stated above the differences."""
    table, rng = shared_rows
    truth = table.labels.astype(int)
    runs = [
        _run(tmp_path, name, table, _noisy(truth, share, rng)) for name, share in (("a", 0.5), ("b", 0.5), ("c", 0.3))
    ]
    (group,) = paired_differences(runs, resamples=300)
    frames = [pd.read_csv(run / "predictions.csv") for run in runs]
    resampled = [resample(counts, 300, 0) for counts in aligned_counts(frames)]
    for metric, entry in group.differences.items():
        simultaneous = table_differences(resampled, metric)
        best = ["a", "b", "c"].index(entry["best"])
        for name, diff in entry["runs"].items():
            want = simultaneous.difference(["a", "b", "c"].index(name), best)
            assert diff.ci95 == pytest.approx(want.ci95) and diff.p_value == pytest.approx(want.p_value)
    assert "95% simultaneous intervals and adjusted p-values over all 3 pairs of runs" in render_markdown([group])


def test_compare_never_bolds_across_different_test_rows(tmp_path, shared_rows):
    table, rng = shared_rows
    truth = table.labels.astype(int)
    other_rows = table.subset(np.arange(0, len(table), 2))
    runs = [
        _run(tmp_path, "a", table, _noisy(truth, 0.4, rng)),
        _run(tmp_path, "b", table, _noisy(truth, 0.5, rng)),
        _run(tmp_path, "c", other_rows, other_rows.labels, split="pairs"),  # perfect, but on other rows
        _run(tmp_path, "d", other_rows, _noisy(other_rows.labels.astype(int), 0.2, rng), split="pairs"),
    ]
    old = _run(tmp_path, "old", table, truth)  # a run written before test rows were hashed: perfect too
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["test_rows_hash"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    groups = paired_differences([*runs, old])
    assert [list(g.frame["run"]) for g in groups] == [["a", "b"], ["c", "d"], ["old"]]
    assert groups[2].test_rows_hash is None and "no test_rows_hash" in groups[2].reason and not groups[2].best
    sections = _sections(render_markdown(groups))
    assert [reason.split(" ")[0] for reason in sections] == ["tested", "tested", "runs"]
    bold_runs = [{line.split(" | ")[0][2:] for line in rows if "**" in line} for rows in sections.values()]
    assert bold_runs[0] <= {"a", "b"} and bold_runs[0] and bold_runs[1] <= {"c", "d"} and bold_runs[1]
    assert not bold_runs[2]  # the old run's rows are unknown: nothing is marked best, though it is perfect
    first = compare_runs(runs[:2])
    assert first.loc[0, "macro_f1_low"] < first.loc[0, "macro_f1"] < first.loc[0, "macro_f1_high"]


def _sections(markdown: str) -> dict[str, list[str]]:
    """Reason line -> the table rows under it (one section per group of runs)."""
    sections, current = {}, None
    for line in markdown.splitlines():
        if line and not line.startswith("|") and not line.startswith("Differences from the best run"):
            current = sections.setdefault(line, [])
        elif line.startswith("| ") and not line.startswith("| run |"):
            current.append(line)
    return sections


def _one_image_corrected(table: PairTable, pred: np.ndarray) -> np.ndarray:
    """``pred`` with every pair of one image (the first holding a wrong prediction) set to its true score."""
    truth = table.labels.astype(int)
    image = table.images[np.flatnonzero(pred != truth)[0]]
    return np.where(table.images == image, truth, pred)


def test_paired_bootstrap_draws_the_same_images_for_both_runs(tmp_path, shared_rows):
    """Paired: identical runs differ by exactly 0 in every resample; runs differing on one image only differ,
    in every resample, in that image's direction (an unpaired bootstrap gives both a wide interval across 0)."""
    table, rng = shared_rows
    truth = table.labels.astype(int)
    pred = _noisy(truth, 0.5, rng)
    better = _one_image_corrected(table, pred)
    counts, better_counts = image_counts(truth, pred, table.images), image_counts(truth, better, table.images)
    for metric in ("accuracy", "macro_f1"):
        same = paired_difference(counts, counts, metric, resamples=300, seed=3)
        assert same.difference == pytest.approx(0.0, abs=1e-12) and not same.significant, metric
        assert same.ci95 == pytest.approx([0.0, 0.0], abs=1e-12), metric
        one = paired_difference(better_counts, counts, metric, resamples=300, seed=3)
        # the draws that leave the image out differ by exactly 0, so the interval stays above about 0 (an unpaired
        # bootstrap reaches -0.087); its upper end is loose: those draws show no spread for the studentised t
        assert one.difference > 0 and one.ci95[0] >= -0.01, (metric, one)
    runs = [_run(tmp_path, "a", table, pred), _run(tmp_path, "a_again", table, pred)]
    runs.append(_run(tmp_path, "a_fixed", table, better))
    (group,) = paired_differences(runs, metrics=("macro_f1",), resamples=300)
    assert group.differences["macro_f1"]["best"] == "a_fixed"
    for run in ("a", "a_again"):  # each differs from the best on one image only
        low, high = group.difference("macro_f1", run).ci95
        assert low > -0.1 and high <= 0.01, (run, low, high)  # about one side of 0 (unpaired: +-0.08)
    twin = paired_differences(runs[:2], metrics=("macro_f1",), resamples=300)[0]
    (only,) = twin.differences["macro_f1"]["runs"].values()
    assert only.ci95 == pytest.approx([0.0, 0.0], abs=1e-12)


def test_runs_on_other_test_rows_get_their_own_table_whatever_else_they_share(tmp_path, shared_rows):
    """Grouped by the test rows only: the same split kind, seed, settings and numbers of pairs and images do
    not put runs tested on other rows in one table, and another split kind on the same rows does not keep
    runs apart."""
    table, rng = shared_rows
    half = len(table) // 2  # whole images on either side: 30 images, 240 pairs each
    rows, other_rows = table.subset(np.arange(half)), table.subset(np.arange(half, len(table)))
    truth, other_truth = rows.labels.astype(int), other_rows.labels.astype(int)
    runs = [
        _run(tmp_path, "a", rows, _noisy(truth, 0.4, rng), seed=42),
        _run(tmp_path, "b", rows, _noisy(truth, 0.6, rng), seed=42),
        _run(tmp_path, "c", other_rows, _noisy(other_truth, 0.5, rng), seed=42),
        _run(tmp_path, "d", other_rows, other_truth, seed=42),
        _run(tmp_path, "e", rows, _noisy(truth, 0.5, rng), split="pairs", seed=42),
    ]
    frame = compare_runs(runs)
    assert frame["n_test"].nunique() == 1 and frame["n_test_images"].nunique() == 1
    groups = paired_differences(runs, resamples=100)
    assert sorted(sorted(g.frame["run"]) for g in groups) == [["a", "b", "e"], ["c", "d"]]
    assert len({g.test_rows_hash for g in groups}) == 2
    for group in groups:
        named = set(group.frame["run"])
        for entry in group.differences.values():
            assert entry["best"] in named and set(entry["runs"]) == named - {entry["best"]}


def test_adjacent_accuracy_has_an_interval_and_a_column_in_compare(tmp_path, shared_rows):
    table, rng = shared_rows
    truth = table.labels.astype(int)
    off_by_one = np.where(truth < 5, truth + 1, truth - 1)  # every prediction one step off: adjacent, not exact
    runs = [_run(tmp_path, "near", table, off_by_one), _run(tmp_path, "noisy", table, _noisy(truth, 0.3, rng))]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["accuracy"] == 0.0 and metrics["adjacent_accuracy"] == 1.0
    assert metrics["ci95"]["adjacent_accuracy"] == [1.0, 1.0]
    frame = compare_runs(runs)
    assert (
        frame.loc[1, "adjacent_accuracy_low"]
        < frame.loc[1, "adjacent_accuracy"]
        < frame.loc[1, "adjacent_accuracy_high"]
    )
    assert "adjacent_accuracy" in render_markdown(paired_differences(runs)).splitlines()[2]
