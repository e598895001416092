"""`tagcons demo` end to end: the table, the files, and real signal over the majority baseline."""

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tagcons.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
FLOAT = re.compile(r"-?\d+\.\d+")
# Printed figures may differ in the last digit across platforms (BLAS summation order); nothing more.
FIGURE_TOLERANCE = 2e-3
SIGNAL_MARGIN = 0.10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow  # the whole demo: embed, four heads, a fine-tune


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run shared by the tests below (each test passes alone: the fixture runs it)."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    printed, logged = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(logged):
        main(["demo", "--out", str(out)])  # as `make demo` runs it: the README quotes this output
    return out, printed.getvalue(), logged.getvalue()


def test_demo_end_to_end(demo_run):
    out, printed, _ = demo_run
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
    out, _, _ = demo_run
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


def readme_demo_output() -> list[str]:
    """The lines the README says `make demo` prints (its text block after "It prints:")."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"It prints:\n\n```text\n(.*?)```", text, flags=re.S)
    assert block, "README: the demo's sample output block (after 'It prints:') is missing"
    return [line for line in block.group(1).splitlines() if line.strip()]  # "..." lines: elided output


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _same_line(quoted: str, printed: str) -> bool:
    """Equal text, and equal figures within FIGURE_TOLERANCE."""
    if FLOAT.sub("#", quoted) != FLOAT.sub("#", printed):
        return False
    return all(
        abs(float(a) - float(b)) <= FIGURE_TOLERANCE for a, b in zip(FLOAT.findall(quoted), FLOAT.findall(printed))
    )


def _printed_tables(lines: list[str]) -> dict[str, list[list[str]]]:
    """The printed tables: header cells (joined) -> the rows' cells."""
    tables, header = {}, None
    for line in lines:
        if not line.startswith("|"):
            header = None
        elif not line.startswith("|---"):
            if header is None:
                header = "|".join(_cells(line))
                tables[header] = []
            else:
                tables[header].append(_cells(line))
    return tables


def _check_quoted_row(header: list[str], row: list[str], tables: dict[str, list[list[str]]]) -> None:
    """The printed row of the same run (and metric) holds the quoted value in every column the README names."""
    named = [(i, name) for i, name in enumerate(header) if name != "..."]
    printed_header = next(h.split("|") for h in tables if {name for _, name in named} <= set(h.split("|")))
    keys = [(i, printed_header.index(name)) for i, name in named if name in ("run", "metric")]
    matches = [r for r in tables["|".join(printed_header)] if all(r[j] == row[i] for i, j in keys)]
    assert matches, f"README row {row} is not printed"
    for i, name in named:
        assert _same_line(row[i], matches[0][printed_header.index(name)]), (name, row, matches[0])


README_TRANSFORMERS_MAJOR = 5  # the README's output is `make demo`'s, in .venv (transformers 5.x)


def test_the_readme_quotes_what_the_demo_prints(demo_run):
    """Every line of the README's sample output is printed by the demo, figures within a last-digit tolerance;
    table rows are checked column by column under the README's (elided) headers. The tiny backbone is the
    same on every machine for one transformers major version; `make test-min`'s 4.x initialises it apart."""
    import transformers

    if int(transformers.__version__.split(".")[0]) != README_TRANSFORMERS_MAJOR:
        pytest.skip(f"the README quotes the demo under transformers {README_TRANSFORMERS_MAJOR}.x")
    out, printed, _ = demo_run
    lines = [line.replace(str(out), "demo_out") for line in printed.splitlines()]
    tables, header = _printed_tables(lines), None
    for quoted in readme_demo_output():
        if quoted == "...":
            header = None
        elif not quoted.startswith("|"):
            header = None
            assert any(_same_line(quoted, line) for line in lines), f"README quotes a line not printed: {quoted}"
        elif not quoted.startswith("|---"):
            if header is None:
                header = _cells(quoted)
            else:
                _check_quoted_row(header, _cells(quoted), tables)


def test_the_demo_log_says_each_thing_once_in_readable_lines(demo_run):
    """The heads share one read of the table (one duplicate-rows note for all of them, then one each for the
    fine-tune and the audit), and the fine-tune's epochs are lines of named figures, not Python dicts."""
    _, _, logged = demo_run
    assert logged.count("exact duplicate rows removed") == 3, logged
    epochs = [line for line in logged.splitlines() if line.startswith("tagcons: epoch ")]
    assert len(epochs) == 3 and all("{" not in line and "validation QWK" in line for line in epochs), epochs
    assert epochs[0].startswith("tagcons: epoch 1/3: ")
