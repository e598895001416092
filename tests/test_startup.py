"""Lazy imports: a command loads only the libraries it uses (checked in a fresh interpreter's sys.modules).

Timings live in benchmarks/startup.py; these tests check what is imported, not how long it takes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from numbers_helpers import assert_same_numbers
from test_heads_support import planted, write_cache, write_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lightgbm", "xgboost")
SCIENCE = ("sklearn", "scipy", "matplotlib")  # what a no-op embed never needs either
PROBE = """
import json, sys
from tagcons.cli import main
try:
    main(sys.argv[2:])  # argv[1]: the packages to look for
except SystemExit as exit_info:
    if exit_info.code:
        raise
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1].split(",")))))
"""


def heavy_imports(*args, look_for=HEAVY) -> list[str]:
    """The packages of ``look_for`` (heavy ones by default) a fresh `tagcons ARGS` process imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(look_for), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    data = planted(n_images=20, per_image=6, dim=8, seed=3)
    return {"root": root, "pairs": write_pairs(data, root / "pairs.csv"), "cache": write_cache(data, root / "c.h5")}


def test_help_imports_no_heavy_library():
    assert heavy_imports("--help") == []


@pytest.mark.parametrize(
    "head, expected", [("threshold", []), ("logreg", []), ("lgbm", ["lightgbm"]), ("xgb", ["xgboost"])]
)
def test_fit_head_imports_only_what_its_head_uses(files, head, expected):
    args = ["-q", "fit-head", "--cache", files["cache"], "--data", files["pairs"], "--head", head]
    assert heavy_imports(*args, "--out", files["root"] / head) == expected


@pytest.mark.parametrize("head", ["threshold", "logreg"])
def test_a_fit_writes_its_run_and_its_plots_without_matplotlib_or_torch(files, head):
    args = ["-q", "fit-head", "--cache", files["cache"], "--data", files["pairs"], "--head", head]
    out = files["root"] / f"light_{head}"
    assert heavy_imports(*args, "--out", out, look_for=(*HEAVY, "matplotlib")) == []
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert head == "threshold" or (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_many_heads_in_one_process_share_one_join_and_print_the_table(files, capsys):
    from test_cli import run_cli

    out = files["root"] / "grid"
    args = ["fit-head", "--cache", files["cache"], "--data", files["pairs"], "--out", out]
    code, stdout, _ = run_cli([*args, "--head", "threshold", "--head", "logreg", "--param", "threads=1"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["logreg", "threshold"]
    assert all((out / head / "metrics.json").is_file() for head in ("logreg", "threshold"))
    assert "| threshold" in stdout and "| logreg" in stdout  # the compare table


def test_progress_bars_only_on_a_terminal_or_when_forced(files, capsys):
    from test_cli import run_cli

    args = ["fit-head", "--cache", files["cache"], "--data", files["pairs"], "--head", "mlp"]
    args += ["--param", "max_epochs=2", "--param", "patience=0"]
    code, _, logged = run_cli([*args, "--out", files["root"] / "mlp_log"], capsys)  # stderr here is not a terminal
    assert code == 0 and "\r" not in logged and "mlp epochs" not in logged
    code, _, forced = run_cli(["--progress", *args, "--out", files["root"] / "mlp_bar"], capsys)
    assert code == 0 and "mlp epochs" in forced


def test_embed_rerun_with_nothing_new_imports_neither_torch_nor_scikit_learn(tmp_path):
    from embed_helpers import embed, make_image_set

    pairs, images = make_image_set(tmp_path, n_images=3, tags_per_image=2)
    cache = tmp_path / "cache.h5"
    embed(pairs, images, cache)  # in this process: the subprocess below starts fresh
    args = ["-q", "embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", cache, "--workers", "0"]
    assert heavy_imports(*args, look_for=HEAVY + SCIENCE) == []


def test_embed_rerun_whose_only_new_work_is_a_still_missing_image_loads_no_model(tmp_path):
    from embed_helpers import cache_contents, embed, make_image_set

    pairs, images = make_image_set(tmp_path, n_images=3, tags_per_image=2)
    (images / "cat_01.png").unlink()
    cache = tmp_path / "cache.h5"
    assert embed(pairs, images, cache).images_failed == 1  # in this process: the subprocess below starts fresh
    args = ["-q", "embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", cache, "--workers", "0"]
    assert heavy_imports(*args, look_for=HEAVY + SCIENCE) == []
    assert set(cache_contents(cache)["failed"]) == {"cat_01.png"}  # still recorded as failed


def test_many_heads_fit_the_split_and_the_baselines_once_with_the_same_results(files, tmp_path, monkeypatch):
    from tagcons.heads import FitHeadConfig, fit_head, fit_heads
    from tagcons.heads import baselines as baselines_module
    from tagcons.heads import fit as fit_module

    calls = {"split": 0, "text_only": 0}
    split, text_fit = fit_module.split_then_drop, baselines_module.TextOnlyHead.fit

    def counted_split(*args, **kwargs):
        calls["split"] += 1
        return split(*args, **kwargs)

    def counted_fit(self, *args, **kwargs):
        calls["text_only"] += 1
        return text_fit(self, *args, **kwargs)

    monkeypatch.setattr(fit_module, "split_then_drop", counted_split)
    monkeypatch.setattr(baselines_module.TextOnlyHead, "fit", counted_fit)
    config = FitHeadConfig(data=files["pairs"], cache=files["cache"], head="threshold", out=tmp_path / "grid")
    runs = fit_heads(config, ["threshold", "logreg", "lgbm"])
    assert calls == {"split": 1, "text_only": 1}
    alone = fit_head(FitHeadConfig(data=files["pairs"], cache=files["cache"], head="lgbm", out=tmp_path / "alone"))
    assert_same_numbers(runs[2].metrics, alone.metrics)  # sharing changes no number
    assert_same_numbers(runs[0].metrics["baselines"], alone.metrics["baselines"])
    assert_same_numbers(runs[1].metrics["baselines"], alone.metrics["baselines"])
