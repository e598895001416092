"""Embedding past one process: --shard K/N plus `cache merge`, and torchrun with one shard per rank."""

import os
import signal
import subprocess
import sys
import time

import pytest
from embed_helpers import assert_same_contents, cache_contents, embed, make_image_set

from tagcons.cache import merge_parts, pending_parts
from tagcons.cli import main as cli_main

TESTS = os.path.dirname(__file__)


@pytest.fixture
def image_set(tmp_path):
    pairs, images = make_image_set(tmp_path, n_images=16)
    embed(pairs, images, tmp_path / "single.h5")
    return pairs, images


def test_job_array_shards_then_merge_equal_a_single_run(tmp_path, image_set):
    pairs, images = image_set
    first = embed(pairs, images, tmp_path / "c.h5", shard=(0, 2))
    second = embed(pairs, images, tmp_path / "c.h5", shard=(1, 2))
    assert first.images_new + second.images_new == 16 and first.images_new and second.images_new
    assert pending_parts(tmp_path / "c.h5")
    cli_main(["cache", "merge", str(tmp_path / "c.h5")])  # returns normally on success
    assert not pending_parts(tmp_path / "c.h5")
    assert_same_contents(cache_contents(tmp_path / "single.h5"), cache_contents(tmp_path / "c.h5"))


SHARD_SCRIPT = """
import sys
from embed_helpers import embed
from pathlib import Path
root = Path(sys.argv[1])
embed(root / "pairs.csv", root / "images", root / "c.h5", batch_size=1, commit_rows=1, shard=(1, 2))
"""


def test_a_killed_shard_is_rerun_and_only_its_missing_keys_are_encoded(tmp_path, image_set):
    pairs, images = image_set
    embed(pairs, images, tmp_path / "c.h5", shard=(0, 2))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-c", SHARD_SCRIPT, str(tmp_path)], env=env)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len([p for p in pending_parts(tmp_path / "c.h5") if "shard-01" in p.name]) >= 2:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = embed(pairs, images, tmp_path / "c.h5", shard=(1, 2))
    assert rerun.images_cached >= 1  # what the killed shard committed is not encoded again
    merge_parts(tmp_path / "c.h5")
    assert_same_contents(cache_contents(tmp_path / "single.h5"), cache_contents(tmp_path / "c.h5"))


@pytest.mark.slow
def test_torchrun_two_ranks_on_cpu_equal_a_single_run(tmp_path, image_set):
    pairs, images = image_set
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tagcons",
        "-q",
        "embed",
        "--data",
        str(pairs),
        "--images",
        str(images),
        "--backbone",
        "tiny",
        "--out",
        str(tmp_path / "c.h5"),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images 16 new" in result.stdout and result.stdout.count("images ") == 1  # totals, printed once
    assert not pending_parts(tmp_path / "c.h5")
    assert_same_contents(cache_contents(tmp_path / "single.h5"), cache_contents(tmp_path / "c.h5"))
