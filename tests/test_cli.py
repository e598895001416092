"""The command line contract: exit codes, one-line errors, commands wired to the library."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from embed_helpers import make_image_set

from tagcons.cli import cli, main


def run_cli(args, capsys):
    """Run `tagcons ARGS` in-process; return (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_head_choices_come_from_the_registry():
    from tagcons.heads.registry import head_names

    head_option = next(p for p in cli.commands["fit-head"].params if p.name == "heads")
    assert set(head_option.type.choices) >= set(head_names())


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.png,x,7\n", "outside 1-5 at lines 2"),
        ("../escape.png,x,3\n", "escapes the images folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, rows, message):
    (tmp_path / "images").mkdir()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("Image Filename,Hashtag,Score\n" + rows, encoding="utf-8")
    code, _, err = run_cli(
        [
            "-q",
            "embed",
            "--data",
            pairs,
            "--images",
            tmp_path / "images",
            "--backbone",
            "tiny",
            "--out",
            tmp_path / "c.h5",
        ],
        capsys,
    )
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.h5").exists()  # nothing written on bad input


def test_usage_errors_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["embed", "--data", tmp_path / "x.csv"], capsys)
    assert code == 2 and "Missing option" in err
    code, _, err = run_cli(
        ["embed", "--data", "x", "--images", "y", "--backbone", "tiny", "--out", "z", "--shard", "3/2"], capsys
    )
    assert code == 2 and "K must be in 0..N-1" in err


def test_unreachable_backbone_exits_2_naming_the_model(tmp_path, capsys):
    pairs, images = make_image_set(tmp_path, n_images=2)
    code, _, err = run_cli(
        ["-q", "embed", "--data", pairs, "--images", images, "--backbone", "koclip", "--out", tmp_path / "c.h5"], capsys
    )
    assert code == 2 and "Bingsu/clip-vit-large-patch14-ko" in err and "Traceback" not in err


def test_embed_strict_exits_3_after_saving_then_fit_predict_compare(tmp_path, capsys):
    pairs, images = make_image_set(tmp_path, n_images=30, tags_per_image=4)
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("gone.png,#x,2\n")
    cache = tmp_path / "c.h5"
    code, _, err = run_cli(
        [
            "-q",
            "embed",
            "--data",
            pairs,
            "--images",
            images,
            "--backbone",
            "tiny",
            "--out",
            cache,
            "--workers",
            "0",
            "--strict",
        ],
        capsys,
    )
    assert code == 3 and "gone.png" in err and cache.is_file()
    code, out, _ = run_cli(
        ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "logreg", "--out", tmp_path / "run"], capsys
    )
    assert code == 0 and "macro_f1" in out
    code, out, _ = run_cli(
        ["-q", "predict", "--run", tmp_path / "run", "--cache", cache, "--data", pairs, "--out", tmp_path / "pred.csv"],
        capsys,
    )
    assert code == 0 and "1 missing" in out
    scored = pd.read_csv(tmp_path / "pred.csv")
    assert len(scored) == 120 and set(scored["pred"]) <= {1, 2, 3, 4, 5} and "gone.png" not in set(scored["image"])
    code, out, _ = run_cli(["-q", "compare", tmp_path / "run", "--out", tmp_path / "table.md"], capsys)
    assert code == 0 and "| logreg |" in out
    assert list(pd.read_csv(tmp_path / "table.csv")["head"]) == ["logreg"]


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "tagcons", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "tagcons" in result.stdout


def test_fit_head_and_predict_follow_the_caches_strip_hash(tmp_path, capsys):
    pairs, images = make_image_set(tmp_path, n_images=30, tags_per_image=4)
    cache = tmp_path / "c.h5"
    assert (
        run_cli(
            [
                "-q",
                "embed",
                "--data",
                pairs,
                "--images",
                images,
                "--backbone",
                "tiny",
                "--out",
                cache,
                "--workers",
                "0",
                "--strip-hash",
            ],
            capsys,
        )[0]
        == 0
    )
    code, out, _ = run_cli(
        ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "threshold", "--out", tmp_path / "run"], capsys
    )
    assert code == 0 and "n_test" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_missing_embeddings"] == 0  # '#빨강' in the pairs file found as '빨강' in the cache
    code, out, _ = run_cli(
        ["-q", "predict", "--run", tmp_path / "run", "--cache", cache, "--data", pairs, "--out", tmp_path / "pred.csv"],
        capsys,
    )
    assert code == 0 and "0 missing" in out
