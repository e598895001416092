"""The command line contract: exit codes, one-line errors, commands wired to the library."""

import json
import re
import subprocess
import sys
from pathlib import Path

import click
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


@pytest.mark.parametrize(
    "key, problem",
    [
        ("../x.png", "escapes the images folder"),
        ("sub/../../x.png", "escapes the images folder"),
        ("/etc/x.png", "is absolute"),
        ("C:\\photos\\x.png", "is absolute"),
        ("\\\\server\\share\\x.png", "is absolute"),
    ],
)
def test_an_image_path_outside_the_folder_names_the_table_and_its_line(tmp_path, capsys, key, problem):
    (tmp_path / "images").mkdir()
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"Image Filename": ["ok.png", key], "Hashtag": ["#a", "#b"], "Score": [3, 4]}).to_csv(
        pairs, index=False
    )
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
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(rf"{re.escape(str(pairs))}: image path '[^']+' {problem}.* at lines 3; ", err), err


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
    predict_again = ["-q", "predict", "--run", tmp_path / "run", "--cache", cache, "--data", pairs]
    code, _, err = run_cli([*predict_again, "--out", tmp_path / "pred.csv"], capsys)
    assert code == 2 and "pred.csv: already exists; pass --overwrite to replace it" in err
    assert run_cli([*predict_again, "--out", tmp_path / "pred.csv", "--overwrite"], capsys)[0] == 0
    scored = pd.read_csv(tmp_path / "pred.csv")
    assert len(scored) == 120 and set(scored["pred"]) <= {1, 2, 3, 4, 5} and "gone.png" not in set(scored["image"])
    code, out, _ = run_cli(["-q", "compare", tmp_path / "run", "--out", tmp_path / "table.md"], capsys)
    assert code == 0 and "| logreg |" in out
    assert list(pd.read_csv(tmp_path / "table.csv")["head"]) == ["logreg"]
    code, _, err = run_cli(["-q", "compare", tmp_path / "run", "--out", tmp_path / "table.md"], capsys)
    assert code == 2 and "table.md: already exists; pass --overwrite" in err
    assert run_cli(["-q", "compare", tmp_path / "run", "--out", tmp_path / "table.md", "--overwrite"], capsys)[0] == 0


# each writes --out (embed extends its cache)
WRITERS = ("fit-head", "predict", "audit", "report", "compare", "finetune")


@pytest.mark.parametrize("command", WRITERS)
def test_every_command_that_writes_an_output_takes_overwrite(command):
    assert "overwrite" in {p.name for p in cli.commands[command].params}


def test_audit_and_report_refuse_an_existing_output_naming_overwrite(tmp_path):
    from tagcons.audit.run import AuditConfig, run_audit
    from tagcons.errors import BadInputError
    from tagcons.evaluate.report import ReportConfig, write_report

    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audit.json").write_text("{}")
    with pytest.raises(BadInputError, match=r"audit: already holds an audit; pass --overwrite to replace it"):
        run_audit(AuditConfig(cache=tmp_path / "c.h5", data=tmp_path / "p.csv", out=tmp_path / "audit"))
    (tmp_path / "report.html").write_text("")
    with pytest.raises(BadInputError, match=r"report\.html: already exists; pass --overwrite to replace it"):
        write_report(ReportConfig(run_dirs=[tmp_path / "run"], out=tmp_path / "report.html"))


def test_help_points_to_what_exists_and_every_writer_option_says_what_it_takes():
    root = Path(__file__).resolve().parents[1]
    for command in ("embed", "finetune"):
        backbone = next(p for p in cli.commands[command].params if p.name == "backbone")
        page, section = re.search(r"(docs/[a-z-]+\.md): ([^),]+)", backbone.help).groups()
        assert section in re.findall(r"^#+ (.+)$", (root / page).read_text(encoding="utf-8"), flags=re.M)
    for name, command in cli.commands.items():
        params = {p.name: p for p in getattr(command, "params", [])}
        if "image_col" in params:
            assert ("--images" in params["image_col"].help) == ("images" in params), name
    assert cli.commands["predict"].params[1].name == "cache_path" and cli.commands["predict"].params[1].help
    assert next(p for p in cli.commands["demo"].params if p.name == "out").help


def test_audit_offers_only_heads_with_probabilities_from_the_registry():
    from tagcons.heads.registry import BUILTIN_WITHOUT_PROBABILITIES, all_head_classes, probabilistic_head_names

    classes = all_head_classes()
    assert set(BUILTIN_WITHOUT_PROBABILITIES) == {name for name, cls in classes.items() if not cls.PROBABILISTIC}
    head = next(p for p in cli.commands["audit"].params if p.name == "head")
    assert list(head.type.choices) == probabilistic_head_names() and "threshold" not in head.type.choices
    with pytest.raises(click.BadParameter, match="head 'threshold' has no probabilities"):
        head.type.convert("threshold", head, None)


def test_a_mistyped_head_gets_the_closest_name(tmp_path, capsys):
    code, _, err = run_cli(
        ["fit-head", "--data", tmp_path / "p.csv", "--out", tmp_path / "r", "--head", "lgmb"], capsys
    )
    assert code == 2 and "did you mean 'lgbm'?" in err
    from tagcons.errors import BadInputError
    from tagcons.heads.registry import get_head_class

    with pytest.raises(BadInputError, match="did you mean 'ordinal'"):
        get_head_class("ordinl")


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


def test_logging_after_a_command_goes_to_the_stderr_of_the_moment(monkeypatch, tmp_path):
    """A command's log handler must not hold on to the stream it started with (closed later, e.g. by a test's
    capture): a later in-process call logs to the live stderr, without 'I/O operation on closed file' errors."""
    import io
    import logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    with pytest.raises(SystemExit):
        main(["cache", "verify", str(tmp_path / "none.h5")])
    assert "cache file not found" in first.getvalue()
    first.close()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("tagcons.test").warning("logged later")
    assert "tagcons: logged later" in later.getvalue() and "Logging error" not in later.getvalue()
