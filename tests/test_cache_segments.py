"""Zero-copy consolidation (tagcons.cache.segments): new parts become a new segment, rows already
consolidated are never rewritten, readers and `cache verify` see one cache, and kill -9 leaves the
last good cache. The threshold is lowered so that small caches take the segmented path."""

import os
import random
import signal

import h5py
import numpy as np
import pytest
from test_cache_crash import (
    N,
    _commit_chunk,
    _writer_inside_consolidation,
    assert_same_state,
    cache_state,
    embed,
    key,
    meta,
    run_writer,
    sha,
)

import tagcons.cache as tc
from tagcons.cache import segments
from tagcons.cache.verify import repair_cache, verify_cache
from tagcons.errors import BadInputError


@pytest.fixture(autouse=True)
def segmented(monkeypatch):
    monkeypatch.setattr(segments, "SEGMENT_MIN_ROWS", 0)
    monkeypatch.setenv("TAGCONS_SEGMENT_MIN_ROWS", "0")  # for the writers in subprocesses


@pytest.fixture
def reference(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "SEGMENT_MIN_ROWS", 10**9)  # one plain file, the way it always was
    path = tmp_path / "plain" / "ref.h5"
    path.parent.mkdir()
    run_writer(path)
    monkeypatch.setattr(segments, "SEGMENT_MIN_ROWS", 0)
    return cache_state(path)


def add_rows(path, lo, hi):
    with tc.CacheWriter(path, meta()) as w:
        _commit_chunk(w, np.arange(lo, hi), w.known_texts())
        return w.consolidate()


def test_consolidating_new_rows_writes_only_them_and_keeps_every_reader_working(tmp_path, reference):
    path = tmp_path / "c.h5"
    run_writer(path, n=N // 2)  # the first consolidation: one plain file
    plain_inode = os.stat(path).st_ino
    add_rows(path, N // 2, N - 100)
    names = segments.segment_names(path)
    assert len(names) == 2 and os.stat(segments.segments_dir(path) / names[0]).st_ino == plain_inode  # linked
    first = {n: os.stat(segments.segments_dir(path) / n) for n in names}
    add_rows(path, N - 100, N)
    newest = segments.segment_files(path)[-1]
    for name, before in first.items():  # the segments already there are untouched
        after = os.stat(segments.segments_dir(path) / name)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    with h5py.File(newest, "r") as f:
        assert f["images/keys"].shape[0] == len([i for i in range(N - 100, N) if i % 13])  # only the new rows
    assert_same_state(path, reference)
    with h5py.File(path, "r") as f:  # plain h5py, as in the README
        keys = f["images/keys"].asstr()[:].tolist()
        np.testing.assert_allclose(f["images/embeds"][:], np.stack([reference[0][k] for k in keys]), atol=0)


def test_a_newer_row_replaces_the_old_one_and_a_failure_removes_it(tmp_path, reference):
    path = tmp_path / "c.h5"
    run_writer(path)
    with tc.CacheWriter(path, meta()) as w:
        w.commit(images=([key(1)], [sha(1)], embed([1]) + 1), failures=([key(2)], [sha(2)], ["gone"]))
        w.consolidate()
    with tc.open(path) as c:
        np.testing.assert_allclose(c.read_rows("images", [c.index("images")[key(1)]])[0], embed([1])[0] + 1, atol=1e-3)
        assert key(2) not in c.index("images") and c.failed[key(2)] == "gone"
        assert len(c.image_keys) == len(reference[0]) - 1
    assert verify_cache(path).ok


def test_verify_covers_every_segment_and_repair_drops_the_damaged_rows(tmp_path):
    path = tmp_path / "c.h5"
    run_writer(path, n=N // 2)
    add_rows(path, N // 2, N)
    report = verify_cache(path)
    assert report.ok and {f.path for f in report.files} >= set(segments.segment_files(path))
    newest = segments.segment_files(path)[-1]
    newest.unlink()  # a lost segment: its rows read as NaN through the index, never as numbers
    report = verify_cache(path)
    assert not report.ok and any(str(newest) in p for p in report.problems)
    with tc.open(path) as c, pytest.raises(BadInputError, match="NaN|inf|damaged"):
        c.image_embeddings()
    repair_cache(path, report)
    assert verify_cache(path).ok
    with tc.open(path) as c:
        assert len(c.image_keys) == len([i for i in range(N // 2) if i % 13])


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
def test_kill9_during_segmented_consolidation_leaves_the_last_good_cache(tmp_path, trial, reference):
    rng = random.Random(200 + trial)
    path = tmp_path / "w" / "c.h5"
    before, proc = _writer_inside_consolidation(path, rng.uniform(0, 0.05))
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL or proc.returncode == 0
    with tc.open(path) as c:  # old or new version, never a broken one
        assert len(c.image_keys) in (len(before[0]), len(reference[0]))
        c.image_embeddings()
    run_writer(path)
    assert_same_state(path, reference)
    assert verify_cache(path).ok
