"""Crash safety, locking across processes and sharded writing of the cache.

Writers run in subprocesses (this file is also their entry point) and are killed with SIGKILL at
chosen moments; a resumed writer must then produce exactly the cache of an uninterrupted run.
"""

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tagcons.cache as tc
from tagcons.cache.lock import FileLock
from tagcons.cache.writer import lock_path
from tagcons.errors import CacheBusyError

D = 16
N = 1200
CHUNK = 40
FAIL_EVERY = 13  # every 13th image "cannot be read"
N_TEXTS = 97
TIMING = {}  # seconds the uninterrupted reference run took to consolidate


def meta():
    return tc.CacheMeta(
        backbone="tiny",
        model_id="tagcons/tiny-clip",
        revision=None,
        projection_dim=D,
        store_dtype="float16",
        settings={"image_size": 32},
    )


def key(i: int) -> str:
    return f"img/{i:05d}_사진.jpg"


def text(i: int) -> str:
    return f"#태그{i % N_TEXTS}"


def embed(ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.float32)
    return np.sin(ids[:, None] * 0.37 + np.arange(D, dtype=np.float32)[None, :])


def sha(i: int) -> str:
    return hashlib.sha256(key(i).encode()).hexdigest()


def mine(i: int, shard) -> bool:
    return shard is None or tc.shard_of(key(i), shard[1]) == shard[0]


def run_writer(path, n=N, chunk=CHUNK, shard=None, announce=False):
    """What `tagcons embed` does: skip what is done, commit chunk by chunk, consolidate."""
    with tc.CacheWriter(path, meta(), shard=shard) as w:
        done = {**w.known_images(), **w.known_failures()}
        texts = w.known_texts()
        todo = [i for i in range(n) if mine(i, shard) and done.get(key(i)) != sha(i)]
        for lo in range(0, len(todo), chunk):
            _commit_chunk(w, np.array(todo[lo : lo + chunk]), texts)
            if announce:
                print(f"COMMIT {lo // chunk}", flush=True)
        if announce:
            print("CONSOLIDATE", flush=True)
        return w.consolidate()


def _commit_chunk(w, idx, known_texts):
    ok, bad = idx[idx % FAIL_EVERY != 0], idx[idx % FAIL_EVERY == 0]
    new_texts = sorted({int(i) % N_TEXTS for i in idx if text(int(i)) not in known_texts})
    w.commit(
        images=([key(i) for i in ok], [sha(i) for i in ok], embed(ok)),
        texts=([text(j) for j in new_texts], embed(np.array(new_texts, dtype=np.int64) + 10**5)),
        failures=([key(i) for i in bad], [sha(i) for i in bad], ["cannot identify image file"] * len(bad)),
    )
    known_texts.update(text(j) for j in new_texts)


def cache_state(path):
    with tc.open(path) as c:
        images = dict(zip(c.image_keys, c.image_embeddings()))
        texts = dict(zip(c.text_keys, c.text_embeddings()))
        return images, texts, dict(c.failed), c.image_sha256


def assert_same_state(path, reference):
    images, texts, failed, shas = cache_state(path)
    ref_images, ref_texts, ref_failed, ref_shas = reference
    assert images.keys() == ref_images.keys() and texts.keys() == ref_texts.keys()
    assert failed == ref_failed and shas == ref_shas
    for k, v in images.items():
        np.testing.assert_array_equal(v, ref_images[k])
    for k, v in texts.items():
        np.testing.assert_array_equal(v, ref_texts[k])


def assert_no_leftovers(path: Path):
    assert tc.pending_parts(path) == []
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not path.with_name(path.name + ".parts").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    TIMING["consolidate"] = run_writer(path).seconds
    state = cache_state(path)
    assert len(state[0]) == N - len(range(0, N, FAIL_EVERY)) and len(state[1]) == N_TEXTS
    return state


def spawn(path, *args):
    return subprocess.Popen(
        [sys.executable, __file__, str(path), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after(proc, marker_lines: int, rng: random.Random) -> None:
    """SIGKILL once the worker has printed `marker_lines` lines, plus a random few milliseconds."""
    for _ in range(marker_lines):
        if not proc.stdout.readline():
            break  # finished (or died) early
    time.sleep(rng.uniform(0, 0.02))
    proc.kill()
    proc.wait()


def assert_resumable(path: Path):
    """After any kill: parts are whole, a writer can start, and the main file (if any) reads."""
    with tc.CacheWriter(path, meta()) as w:
        w.known_images()
    if path.exists():
        with tc.open(path) as c:
            c.image_embeddings()


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
def test_kill9_during_commits_then_resume(tmp_path, trial, reference):
    rng = random.Random(trial)
    path = tmp_path / "c.h5"
    n_chunks = -(-N // CHUNK)
    for _ in range(3):
        kill_after(spawn(path, "announce"), rng.randrange(1, n_chunks // 3), rng)
        assert_resumable(path)
    assert tc.pending_parts(path), "the kills should have left committed parts behind"
    run_writer(path)
    assert_same_state(path, reference)
    assert_no_leftovers(path)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_kill9_during_consolidate_leaves_readable_cache(tmp_path, trial, reference):
    rng = random.Random(100 + trial)
    delay = rng.uniform(0, 0.9) * TIMING["consolidate"]  # somewhere inside consolidation, timed uninterrupted
    for attempt in range(4):  # a machine faster than when timed finishes first: retry with half the delay
        path = tmp_path / f"attempt{attempt}" / "c.h5"
        before, proc = _writer_inside_consolidation(path, delay / 2**attempt)
        if proc.poll() is None:
            break
        proc.wait()
    assert proc.poll() is None, "the writer exited before every kill: no kill hit consolidation"
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with tc.open(path) as c:  # old or new version, never a broken one
        assert len(c.image_keys) in (len(before[0]), len(reference[0]))
    run_writer(path)
    assert_same_state(path, reference)
    assert_no_leftovers(path)


def _writer_inside_consolidation(path, delay: float):
    """A consolidated cache of half the rows, then a writer that commits the rest and is `delay` s into
    consolidating them (when its announcements say it started)."""
    path.parent.mkdir(parents=True)
    run_writer(path, n=N // 2, chunk=N)
    before = cache_state(path)
    n_lines = -(-(N - N // 2) // CHUNK) + 1  # every COMMIT line, then CONSOLIDATE
    proc = spawn(path, "announce")
    for _ in range(n_lines):
        proc.stdout.readline()
    time.sleep(delay)
    return before, proc


def test_crash_after_swap_leftover_parts_and_temp_are_harmless(tmp_path, reference):
    """The states a kill inside consolidation can leave: a half-written temp file, and (after the
    atomic swap) any suffix of the merged parts not yet deleted (they are deleted oldest first)."""
    path = tmp_path / "c.h5"
    run_writer(path, n=N // 2, chunk=N)
    with tc.CacheWriter(path, meta()) as w:
        # older parts hold wrong rows with the right sha256 (resume would not redo them): only
        # replaying newer parts last can get the reference back
        wrong = np.arange(N // 2, N // 2 + 50)
        w.commit(
            images=([key(i) for i in wrong], [sha(i) for i in wrong], embed(wrong) + 1),
            failures=([key(1)], [sha(1)], ["transient error"]),
        )
        texts = w.known_texts()
        for lo in range(N // 2, N, 100):
            _commit_chunk(w, np.arange(lo, min(lo + 100, N)), texts)
        w.commit_images([key(1)], [sha(1)], embed([1]))
        parts = tc.pending_parts(path)
        shutil.copytree(parts[0].parent, tmp_path / "saved")
        w.consolidate()
    for first in (0, len(parts) // 2, len(parts) - 1):
        parts[0].parent.mkdir(exist_ok=True)
        for part in parts[first:]:
            shutil.copy(tmp_path / "saved" / part.name, part)
        (tmp_path / "c.h5.consolidate-99999.tmp").write_bytes(b"half a file")
        with tc.open(path) as c:
            assert len(c.image_keys) == len(reference[0])
        run_writer(path)
        assert_same_state(path, reference)
        assert_no_leftovers(path)


def test_writer_in_other_process_refused(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()):
        proc = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "CacheBusyError" in proc.stderr and "another tagcons embed" in proc.stderr


def test_concurrent_shards_then_merge_equal_single_writer(tmp_path, reference):
    path = tmp_path / "c.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Held as a third, still running shard holds it: no shard can take the exclusive lock to merge, so neither
    # merges before the other has started (a shard starting during a merge is refused), however they are scheduled.
    third_shard = FileLock(lock_path(path), path, shared=True).acquire()
    procs = [spawn(path, "shard", k, 2) for k in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert tc.pending_parts(path)  # both shards left their parts for the last one to merge
    third_shard.release()
    tc.merge_parts(path)
    assert_same_state(path, reference)
    assert_no_leftovers(path)


def test_shard_writers_in_process_last_one_merges(tmp_path, reference):
    path = tmp_path / "c.h5"
    w0, w1 = tc.CacheWriter(path, meta(), shard=(0, 2)), tc.CacheWriter(path, meta(), shard=(1, 2))
    with pytest.raises(CacheBusyError):
        tc.CacheWriter(path, meta(), shard=(1, 2))  # the same shard twice
    with pytest.raises(CacheBusyError):
        tc.merge_parts(path)  # shards still writing
    with pytest.raises(CacheBusyError):
        tc.CacheWriter(path, meta())
    texts = set()
    for i in range(0, N, CHUNK):
        for k, w in enumerate((w0, w1)):
            idx = np.array([j for j in range(i, min(i + CHUNK, N)) if mine(j, (k, 2))])
            _commit_chunk(w, idx, texts) if idx.size else None
    assert w0.consolidate() is None  # w1 still writing
    with pytest.raises(RuntimeError):
        w0.commit_images(["x"], ["s"], embed([1]))
    assert w1.consolidate().images == len(reference[0])
    w0.close()
    w1.close()
    assert_same_state(path, reference)
    assert_no_leftovers(path)


def test_unmerged_shards_merged_by_merge_parts(tmp_path, reference):
    path = tmp_path / "c.h5"
    for k in range(3):
        with tc.CacheWriter(path, meta(), shard=(k, 3)) as w:  # e.g. torchrun ranks that did not merge
            texts = set()
            idx = np.array([i for i in range(N) if mine(i, (k, 3))])
            for lo in range(0, idx.size, 300):
                _commit_chunk(w, idx[lo : lo + 300], texts)
    parts = tc.pending_parts(path)
    assert {p.name.rsplit("-", 1)[0] for p in parts} == {"shard-0-of-3", "shard-1-of-3", "shard-2-of-3"}
    stats = tc.merge_parts(path)
    assert stats.parts == len(parts) and stats.images == len(reference[0])
    assert_same_state(path, reference)
    assert_no_leftovers(path)


if __name__ == "__main__":  # subprocess entry: PATH [announce | shard K N]
    args = sys.argv[1:]
    shard = (int(args[2]), int(args[3])) if len(args) > 1 and args[1] == "shard" else None
    run_writer(Path(args[0]), shard=shard, announce=len(args) > 1 and args[1] == "announce")
