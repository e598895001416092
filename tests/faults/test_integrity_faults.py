"""Fault suite, integrity (issue 24): key datasets without checksums, verify on folders and mixed
parts, temporaries of a killed repair, the free-space margin, and the no-op embed's promise.

Each test failed before its fix. Caches are written from synthetic arrays (no model).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import tagcons.cache as tc
from tagcons.cache import diskspace
from tagcons.cache.lock import FileLock
from tagcons.cache.parts import parts_dir
from tagcons.cache.writer import lock_path
from tagcons.errors import BadInputError, CacheBusyError
from tests.embed_helpers import FEATURE_ATOL, make_image_set
from tests.faults import test_cache_faults
from tests.faults.test_cache_faults import (
    cli,
    complete_cache,
    embed_args,
    flip_chunk_bytes,
    meta,
    one_line,
    vecs,
    write_cache,
)

REPO = Path(__file__).resolve().parents[2]
image_set, no_model = test_cache_faults.image_set, test_cache_faults.no_model  # the cache suite's fixtures


def raw_replace(path: Path, old: bytes, new: bytes) -> None:
    """Change bytes of the file behind HDF5's back (a bad sector, a stray program); `old` occurs once."""
    data = path.read_bytes()
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times"
    path.write_bytes(data.replace(old, new))


def swap_in_heap(path: Path, a: bytes, b: bytes) -> None:
    data = path.read_bytes()
    i, j = data.index(a), data.index(b)
    assert len(a) == len(b) and data.count(a) == data.count(b) == 1
    data = bytearray(data)
    data[i : i + len(a)], data[j : j + len(b)] = b, a
    path.write_bytes(bytes(data))


# --- defect 1: every dataset covered by a checksum and read by verify ---------------------------------------


def test_two_swapped_equal_length_keys_are_found_by_verify_and_refused_by_readers(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5", n_images=12)
    swap_in_heap(path, b"img_003.png", b"img_007.png")
    with h5py.File(path, "r") as f:  # the swap passes HDF5 itself: the heap has no checksum
        assert f["images/keys"].asstr()[3] == "img_007.png"
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err)
    assert "images/keys does not match its stored digest" in out
    with tc.open(path) as cache, pytest.raises(BadInputError, match=r"images/keys does not match.*verify --repair"):
        cache.lookup(["img_003.png"], ["#t0"])


@pytest.mark.parametrize(
    ("dataset", "old", "new"),
    [
        ("images/keys", b"img_005.png", b"img_\xff\xfe\xfd\xfcpng"),
        ("texts/keys", b"#t17", b"#\xc3(\xa0"),
        ("images/sha256", b"sha11", b"sha\xf0\x28"),
    ],
)
def test_flipped_bytes_in_a_string_dataset_are_found_and_repaired(tmp_path, capsys, dataset, old, new):
    path = write_cache(tmp_path / "c.h5", n_images=12, n_texts=20)
    raw_replace(path, old, new)
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err) and dataset in out, out
    with pytest.raises(BadInputError, match=dataset):  # what embed plans from
        tc.CacheWriter(path, None)
    with tc.open(path) as cache, pytest.raises(BadInputError, match=rf"{dataset}.*verify --repair"):
        cache.keys(dataset.split("/")[0]) if dataset != "images/sha256" else cache.image_sha256
    code, out, err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "repaired" in out, err
    assert cli(["cache", "verify", str(path)], capsys)[0] == 0
    with tc.CacheWriter(path, None) as writer:  # the damaged group is re-embedded by the next embed
        assert len(writer.known_images()) == (0 if dataset.startswith("images") else 12)
        assert len(writer.known_texts()) == (0 if dataset.startswith("texts") else 20)


@pytest.mark.parametrize("dataset", ["images/keys", "texts/keys", "images/sha256"])
def test_eight_flipped_bytes_in_a_string_datasets_storage_are_found_and_named(tmp_path, capsys, dataset):
    path = write_cache(tmp_path / "c.h5", n_images=12)
    flip_chunk_bytes(path, dataset)  # the heap addresses themselves: HDF5 cannot follow them any more
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err) and f"{dataset} cannot be read" in out
    with pytest.raises(BadInputError, match=rf"{dataset} cannot be read.*verify --repair"):
        tc.CacheWriter(path, None)  # what embed, fit-head's planning and every reader go through
    code, out, err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "repaired" in out, err
    assert cli(["cache", "verify", str(path)], capsys)[0] == 0


def test_a_cache_written_before_key_digests_opens_and_verify_says_what_it_did_not_check(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5", n_images=6)
    with h5py.File(path, "r+") as f:
        del f.attrs["key_digests"]
    with tc.open(path) as cache:
        assert cache.image_keys[0] == "img_000.png"
    code, out, _ = cli(["cache", "verify", str(path)], capsys)
    assert code == 0 and "not checked in 1 file(s) written before key digests: `--repair` adds them" in out
    code, out, _ = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "key digests added" in out
    code, out, _ = cli(["cache", "verify", str(path)], capsys)
    assert code == 0 and "not checked" not in out
    code, out, _ = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "nothing to repair" in out and "dropped" not in out
    with tc.open(path) as cache:
        assert len(cache.image_keys) == 6


def test_parts_keep_their_digests_through_consolidation(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as writer:
        part = writer.commit_texts(["#a", "#b"], vecs(2))
        swap_in_heap(part, b"#a", b"#b")
        with pytest.raises(BadInputError, match=r"texts/keys does not match its stored digest"):
            writer.consolidate()


# --- defect 8: verify on a folder, and parts of two fingerprints ------------------------------------------


@pytest.mark.parametrize("where", [".", "sub"])
def test_cache_verify_of_a_folder_exits_2_in_one_line(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    code, _, err = cli(["cache", "verify", where], capsys)
    assert code == 2 and one_line(err) and "is a folder" in err


def test_cache_verify_reports_parts_of_two_fingerprints_as_merge_would(tmp_path, capsys):
    path, elsewhere = tmp_path / "c.h5", tmp_path / "other.h5"
    with tc.CacheWriter(path, meta(), shard=(0, 2)) as writer:
        writer.commit_texts(["#a"], vecs(1))
    with tc.CacheWriter(elsewhere, meta(text_template="a photo of {}"), shard=(1, 2)) as writer:
        part = writer.commit_texts(["#b"], vecs(1))  # a shard of another run, copied into this parts folder
    other = Path(shutil.move(part, parts_dir(path) / part.name))
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err)
    assert f"{other}: fingerprint" in out and "`tagcons cache merge` would refuse it" in out
    code, _, err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 2 and one_line(err) and "other settings" in err and other.exists()


# --- defect 12: a repair killed mid-consolidation -----------------------------------------------------------

KILLED_REPAIR = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import tagcons.cache.merge as merge
    from tagcons.cli import main
    real = merge._copy_group
    def dying(out, group, *args):
        if group == "images":
            out.flush()
            os.kill(os.getpid(), 9)  # killed mid-consolidation, the temporary file half written
        return real(out, group, *args)
    merge._copy_group = dying
    main(["cache", "verify", "--repair", sys.argv[1]])
    """
)


def test_a_repair_killed_mid_consolidation_leaves_a_temporary_that_the_next_repair_clears(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5", n_images=12)
    with h5py.File(path, "r+") as f:
        f["images/embeds"][4] = np.nan
    killed = subprocess.run([sys.executable, "-c", KILLED_REPAIR, str(path)], cwd=REPO, timeout=300)
    assert killed.returncode == -9
    assert [p.name for p in tmp_path.glob("c.h5.consolidate-*.tmp")], "the kill left no temporary file"
    code, out, _ = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "1 temporary file(s) of a killed writer" in out
    assert not list(tmp_path.glob("*.tmp"))
    with tc.open(path) as cache:
        assert len(cache.image_keys) == 11


# --- defect 11: the free-space margin sized to the write -----------------------------------------------------


def test_a_small_commit_fits_in_a_few_mib_free(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    free = int(2.9 * (1 << 20))
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda _p: SimpleNamespace(free=free))
    n = 1500  # ~100 KB of new rows (8 float32 a row, keys and hashes)
    assert diskspace.estimate_bytes({"images": n, "texts": 0, "failed": 0}, 8, "float32") < 300_000
    with tc.CacheWriter(path, meta()) as writer:
        writer.commit_images([f"i{i}.png" for i in range(n)], [f"s{i}" for i in range(n)], vecs(n))
        writer.consolidate()
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda _p: SimpleNamespace(free=50_000))
    with tc.CacheWriter(path, meta()) as writer, pytest.raises(BadInputError, match="free"):
        writer.commit_images([f"j{i}.png" for i in range(n)], [f"s{i}" for i in range(n)], vecs(n))
    assert shutil.disk_usage(tmp_path).free > 0


# --- defect 3: forked workers must not hold the cache lock -------------------------------------------------


def _worker(started) -> None:
    started.set()  # runs after the fork hooks: the child is as a DataLoader worker is when it works
    time.sleep(120)


def test_a_forked_child_does_not_keep_the_lock_its_parent_releases(tmp_path):
    path = tmp_path / "c.h5"
    lock = FileLock(lock_path(path), path).acquire()
    fork = multiprocessing.get_context("fork")
    started = fork.Event()
    child = fork.Process(target=_worker, args=(started,))
    child.start()  # a DataLoader worker, forked while the lock is held
    try:
        assert started.wait(300), "the child never started"
        with pytest.raises(CacheBusyError):  # the parent still holds it
            FileLock(lock_path(path), path).acquire()
        lock.release()
        FileLock(lock_path(path), path).acquire().release()  # free once the parent lets go
    finally:
        child.kill()
        child.join()


KILLED_EMBED = """
import sys
from pathlib import Path
from embed_helpers import embed
root = Path(sys.argv[1])
embed(root / "pairs.csv", root / "images", root / "c.h5", batch_size=1, commit_rows=1, workers=2)
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the workers")
def test_kill_9_of_an_embed_with_workers_frees_the_lock_at_once(tmp_path):
    make_image_set(tmp_path, n_images=80, tags_per_image=1)
    path = [str(REPO / "tests"), os.environ.get("PYTHONPATH", ""), str(REPO)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    process = subprocess.Popen([sys.executable, "-c", KILLED_EMBED, str(tmp_path)], env=env, cwd=tmp_path)
    parts, workers, deadline = tmp_path / "c.h5.parts", [], time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:  # poll: the machine may be loaded
        workers = _children(process.pid)
        if len(workers) >= 2 and parts.is_dir() and list(parts.glob("*.h5")):
            break
        time.sleep(0.02)
    assert process.poll() is None and len(workers) >= 2, "the embed ended (or never started its workers)"
    process.send_signal(signal.SIGKILL)
    process.wait()
    try:
        FileLock(lock_path(tmp_path / "c.h5"), tmp_path / "c.h5").acquire().release()  # what a restart takes first
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- defect 2: a no-op embed checks the checksums it promises -----------------------------------------------


def test_a_noop_embed_over_a_damaged_chunk_exits_2_naming_the_dataset(tmp_path, image_set, no_model, capsys):
    pairs, images, hashes = image_set
    path = complete_cache(tmp_path / "c.h5", hashes)
    assert cli(embed_args(pairs, images, path), capsys)[0] == 0  # a sound cache: a no-op
    flip_chunk_bytes(path, "images/embeds")
    code, out, err = cli(embed_args(pairs, images, path), capsys)
    assert code == 2 and one_line(err) and "/images/embeds cannot be read" in err and "--repair" in err


# --- defect 9: the documented feature tolerance is the measured one ------------------------------------------

WORST_SEEN_ELSEWHERE = 2.03e-6  # issue 24: two shards merged vs one run, on another machine


def test_the_feature_tolerance_covers_what_was_measured_and_the_readme_says_it():
    measured = json.loads((REPO / "benchmarks" / "results" / "feature_tolerance.json").read_text())["overall"]
    assert 1.5 * max(measured["max_abs"], WORST_SEEN_ELSEWHERE) <= FEATURE_ATOL
    page = (REPO / "docs" / "cache.md").read_text(encoding="utf-8")
    tolerance = page[page.index("**Tolerance.**") :].split("\n\n")[0]
    assert f"{measured['max_abs']:.1e}".replace("e-06", "e-6") in tolerance
    assert f"{FEATURE_ATOL:.0e}".replace("e-06", "e-6") + " absolute" in tolerance
