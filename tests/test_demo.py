"""`tagcons demo` end to end: the table, the files, and real signal over the majority baseline."""

import json
import re

import pytest

from tagcons.cli import main

SIGNAL_MARGIN = 0.10


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    return out


def test_demo_end_to_end(demo_run, capsys):
    main(["demo", "--out", str(demo_run), "--finetune-epochs", "1"])
    printed = capsys.readouterr().out
    for run in ("threshold", "logreg", "mlp", "lgbm", "finetune"):
        assert f"| {run} |" in printed
        for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "config.json"):
            assert (demo_run / "runs" / run / name).is_file(), f"{run}/{name}"
    assert (demo_run / "runs" / "finetune" / "backbone" / "config.json").is_file()
    assert (demo_run / "compare.md").is_file() and (demo_run / "compare.csv").is_file()
    assert "runs, plots and predictions" in printed
    # the table carries intervals and the pixel-free baselines, as columns and as runs of their own
    assert re.search(r"\| \**0\.\d{4} \[0\.\d{3}, 0\.\d{3}\]", printed) and "text_only_macro_f1" in printed
    assert "| text-only |" in printed and "| image-prior |" in printed and "| run | metric | vs best |" in printed


def test_demo_heads_beat_the_majority_baseline(demo_run):
    margins = {}
    for head in ("mlp", "lgbm"):
        metrics = json.loads((demo_run / "runs" / head / "metrics.json").read_text())
        margins[head] = metrics["macro_f1"] - metrics["baseline"]["macro_f1"]
    assert max(margins.values()) >= SIGNAL_MARGIN, margins


def test_demo_rerun_reuses_the_cache(demo_run, capsys, caplog):
    with caplog.at_level("INFO", logger="tagcons"):
        main(["demo", "--out", str(demo_run), "--finetune-epochs", "0"])
    assert "images: 0 new, 150 cached" in caplog.text
