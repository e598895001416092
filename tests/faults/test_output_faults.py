"""Fault suite, what `report`, `audit` and `fit-head` write (issue 24 defects 4, 5, 10; issue 22 item 2's
audit and report crashes): only a run's own PNGs are embedded, writes are staged (temporary sibling,
rename) and fail in one line, and one fit-head at a time writes into an --out.

Each test failed before its fix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_cli import run_cli
from test_heads_support import planted, write_cache, write_pairs

import tagcons.evaluate.rundir as rundir
import tagcons.heads.fit as fit
from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import (
    FINETUNE_EXPORT_FILE,
    SIDE_KEYS_FILE,
    backbone_trained_keys,
    read_side_keys,
    recorded_trained_keys,
    side_hashes,
)
from tagcons.heads import FitHeadConfig, fit_head
from tagcons.heads.fit import fit_heads

REPO = Path(__file__).resolve().parents[2]
SECRET = "TOP-SECRET-7f3a9c"


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("output_faults")
    data = planted(n_images=20, per_image=8, dim=8, seed=3)
    pairs, cache = write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")
    run = fit_head(FitHeadConfig(cache=cache, data=pairs, head="logreg", out=root / "run", head_params={"C": 1.0}))
    return {"root": root, "pairs": pairs, "cache": cache, "run": run.run_dir}


@pytest.fixture
def run(study, tmp_path):
    """A copy of the logreg run to tamper with."""
    return Path(shutil.copytree(study["run"], tmp_path / "run"))


# --- defect 4: only the run's own PNG files are embedded ------------------------------------------------------


@pytest.mark.parametrize("planted_as", ["symlink", "not a png"])
def test_report_embeds_no_file_but_the_runs_own_pngs(run, tmp_path, capsys, planted_as):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET * 50)
    assert (run / "reliability.png").is_file()
    (run / "reliability.png").unlink()
    if planted_as == "symlink":
        (run / "reliability.png").symlink_to(secret)
    else:
        shutil.copy(secret, run / "reliability.png")
    code, _, err = run_cli(["report", run, "--out", tmp_path / "r.html"], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert SECRET not in page and __import__("base64").b64encode(SECRET.encode()[:30]).decode()[:20] not in page
    assert "left out of the report" in err


def test_report_out_as_a_symlink_replaces_the_link_and_never_writes_through_it(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "r.html"
    link.symlink_to(victim)
    code, _, err = run_cli(["report", run, "--out", link], capsys)
    assert code == 2 and "--overwrite" in err  # an existing output, link or not, needs --overwrite
    code, _, err = run_cli(["report", run, "--out", link, "--overwrite"], capsys)
    assert code == 0, err
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and "<html" in link.read_text(encoding="utf-8").lower()


# --- issue 22 item 2: report and audit crashes -----------------------------------------------------------------


def test_report_on_predictions_that_are_not_text_exits_2_naming_the_file(run, tmp_path, capsys):
    (run / "predictions.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81" * 64)
    code, _, err = run_cli(["report", run, "--out", tmp_path / "r.html"], capsys)
    assert code == 2 and one_line(err) and "predictions.csv" in err


def test_report_out_an_existing_folder_exits_2_in_one_line(run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, _, err = run_cli(["report", run, "--out", tmp_path / "taken"], capsys)
    assert code == 2 and one_line(err) and "is a folder" in err and "taken" in err


def test_audit_out_an_existing_file_exits_2_in_one_line(study, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("mine")
    args = [
        "audit",
        "--cache",
        study["cache"],
        "--data",
        study["pairs"],
        "--out",
        tmp_path / "a.txt",
        "--head",
        "logreg",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and one_line(err) and "a.txt" in err
    assert (tmp_path / "a.txt").read_text() == "mine"


# --- defect 5: staged writes, one line on a full disk or a read-only folder -----------------------------------

FULL_DISK_REPORT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG, as a full disk does
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from tagcons.cli import main
main(["report", sys.argv[1], "--out", sys.argv[2]])
"""


def test_report_on_a_full_disk_exits_2_in_one_line_and_leaves_no_truncated_page(run, tmp_path):
    out = tmp_path / "pages" / "r.html"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_REPORT, str(run), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "File too large" in done.stderr
    assert list(out.parent.iterdir()) == []


def test_report_into_a_read_only_folder_exits_2_in_one_line(run, tmp_path, capsys, monkeypatch):
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):
        if Path(path).parent == tmp_path and any(flag in mode for flag in "wxa"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rundir, "open", read_only, raising=False)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: read_only(self, "w"))
    code, _, err = run_cli(["report", run, "--out", tmp_path / "r.html"], capsys)
    assert code == 2 and one_line(err) and "Read-only file system" in err
    assert not (tmp_path / "r.html").exists()


def test_audit_on_a_full_disk_exits_2_in_one_line_and_leaves_no_partial_folder(study, tmp_path, capsys, monkeypatch):
    real_to_csv = pd.DataFrame.to_csv

    def full_disk(frame, path, *args, **kwargs):
        Path(path).write_text("rank,image\n1,")  # the first bytes made it, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    out = tmp_path / "audit"
    args = ["-q", "audit", "--cache", study["cache"], "--data", study["pairs"], "--out", out, "--head", "logreg"]
    code, _, err = run_cli(args, capsys)
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    assert code == 2 and one_line(err) and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []


# --- defect 10: one fit-head at a time into an --out ----------------------------------------------------------


def test_a_second_multi_head_fit_into_the_same_out_is_refused_while_the_first_runs(study, tmp_path, monkeypatch):
    config = FitHeadConfig(cache=study["cache"], data=study["pairs"], head="threshold", out=tmp_path / "heads")
    real_load, second = fit._load, {}

    def load_then_race(each):
        if not second:  # while the first run is between its checks and its final moves, a second one starts
            second["tried"] = True
            with pytest.raises(BadInputError, match="another tagcons fit-head is writing runs there") as refused:
                fit_heads(config, ["threshold", "text-only"])
            second["error"] = str(refused.value)
        return real_load(each)

    monkeypatch.setattr(fit, "_load", load_then_race)
    results = fit_heads(config, ["threshold", "text-only"])
    assert second.get("error") and [r.run_dir.name for r in results] == ["threshold", "text-only"]


# --- defect 6: part_keys.json tied to its run ---------------------------------------------------------------


def test_a_part_keys_file_copied_from_a_clean_run_is_refused_by_every_reader(study, tmp_path, capsys):
    clean = study["run"]
    donor = fit_head(
        FitHeadConfig(
            cache=study["cache"],
            data=study["pairs"],
            head="logreg",
            out=tmp_path / "donor",
            seed=7,
            head_params={"C": 1.0},
        )
    ).run_dir
    assert read_side_keys(donor)["test"] != read_side_keys(clean)["test"]  # another split: it trained on clean's test
    shutil.copy(clean / SIDE_KEYS_FILE, donor / SIDE_KEYS_FILE)
    refused = r"part_keys.json: the fit, validation, test keys do not match the part hashes in .*config.json"
    with pytest.raises(BadInputError, match=refused):  # what finetune --init-head reads
        recorded_trained_keys(donor, "--init-head donor", False, "--allow-unverified-init")
    predict = [
        "predict",
        "--run",
        donor,
        "--cache",
        study["cache"],
        "--data",
        study["pairs"],
        "--out",
        tmp_path / "p.csv",
    ]
    capsys.readouterr()  # the donor's fit may have logged (a handler left by an earlier command): not predict's
    code, _, err = run_cli(predict, capsys)
    assert code == 2 and one_line(err) and "part_keys.json" in err


def test_an_exported_backbones_part_keys_are_checked_against_its_export_record(study, tmp_path):
    export = tmp_path / "backbone"
    export.mkdir()
    sides = read_side_keys(study["run"])
    (export / FINETUNE_EXPORT_FILE).write_text(json.dumps({"backbone": "tiny", "parts": side_hashes(sides)}))
    shutil.copy(study["run"] / SIDE_KEYS_FILE, export / SIDE_KEYS_FILE)
    assert backbone_trained_keys(export)  # its own keys: accepted
    other = {**{k: sorted(v) for k, v in sides.items() if v is not None}, "test": ["x.png\t#other"]}
    (export / SIDE_KEYS_FILE).write_text(json.dumps(other))
    with pytest.raises(BadInputError, match=r"the test keys do not match the part hashes in .*tagcons_finetune.json"):
        backbone_trained_keys(export)


@pytest.mark.parametrize("command", ["predict", "compare"])
def test_predict_and_compare_out_as_a_symlink_never_write_through_it(study, tmp_path, capsys, command):
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me")
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    if command == "predict":
        args = ["predict", "--run", study["run"], "--cache", study["cache"], "--data", study["pairs"], "--out", link]
    else:
        args = ["compare", study["run"], "--out", link]
    code, _, err = run_cli([*args, "--overwrite"], capsys)  # an existing output, link or not, needs --overwrite
    assert code == 0, err
    assert victim.read_text() == "keep me" and not link.is_symlink() and "," in link.read_text()


def test_fit_head_out_under_a_file_exits_2_in_one_line(study, tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    args = ["fit-head", "--cache", study["cache"], "--data", study["pairs"], "--head", "threshold"]
    code, _, err = run_cli([*args, "--out", tmp_path / "a_file" / "run"], capsys)
    assert code == 2 and one_line(err) and "a_file" in err
