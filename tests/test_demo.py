"""`tagcons demo` end to end: the table, the files, and real signal over the majority baseline."""

import contextlib
import io
import json
import re
import shutil

import pandas as pd
import pytest

from tagcons.cli import main

SIGNAL_MARGIN = 0.10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow  # the whole demo: embed, four heads, a fine-tune


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run shared by the tests below (each test passes alone: the fixture runs it)."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["demo", "--out", str(out), "--finetune-epochs", "1"])
    return out, printed.getvalue()


def test_demo_end_to_end(demo_run):
    out, printed = demo_run
    for run in ("threshold", "logreg", "mlp", "lgbm", "ordinal", "finetune"):
        assert f"| {run} |" in printed
        metrics = json.loads((out / "runs" / run / "metrics.json").read_text())
        assert metrics["n_test"] > 0 and 0 <= metrics["macro_f1"] <= 1
        predictions = pd.read_csv(out / "runs" / run / "predictions.csv")
        assert len(predictions) == metrics["n_test"] and set(predictions["pred"]) <= {1, 2, 3, 4, 5}
        assert json.loads((out / "runs" / run / "config.json").read_text())["seed"] == 42
        assert (out / "runs" / run / "confusion_matrix.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (out / "runs" / "finetune" / "backbone" / "config.json").is_file()
    compare = pd.read_csv(out / "compare.csv")
    assert set(compare["head"]) >= {"threshold", "logreg", "mlp", "lgbm"}
    assert len(compare) == len([d for d in (out / "runs").iterdir() if d.is_dir()])  # one row per run
    assert "| threshold |" in (out / "compare.md").read_text(encoding="utf-8")
    assert "runs, plots and predictions" in printed
    assert (out / "report.html").is_file() and f"report (open in a browser): {out / 'report.html'}" in printed
    assert "scores the generator flipped" in printed and (out / "audit" / "audit.csv").is_file()
    # the table carries intervals and the pixel-free baselines, as columns and as runs of their own
    assert re.search(r"\| \**0\.\d{4} \[0\.\d{3}, 0\.\d{3}\]", printed) and "text_only_macro_f1" in printed
    assert "| text-only |" in printed and "| image-prior |" in printed and "| run | metric | vs best |" in printed


def test_demo_heads_beat_the_majority_baseline(demo_run):
    out, _ = demo_run
    margins = {}
    for head in ("mlp", "lgbm"):
        metrics = json.loads((out / "runs" / head / "metrics.json").read_text())
        margins[head] = metrics["macro_f1"] - metrics["baseline"]["macro_f1"]
    assert max(margins.values()) >= SIGNAL_MARGIN, margins


def test_demo_rerun_reuses_the_cache(demo_run, tmp_path, caplog):
    copy = tmp_path / "demo_out"
    shutil.copytree(demo_run[0], copy)  # rerun on a copy: the shared run stays as the other tests expect
    with caplog.at_level("INFO", logger="tagcons"):
        main(["demo", "--out", str(copy), "--finetune-epochs", "0"])
    assert "images: 0 new, 150 cached" in caplog.text
