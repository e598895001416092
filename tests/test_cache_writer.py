"""CacheWriter's state and its consolidation, checked through what a caller sees: what the writer
reports before and after commits, what the consolidated file holds, what stderr shows, and the
messages of the refusals."""

import h5py
import numpy as np
import pytest
from test_cache import meta, vecs, write

import tagcons.cache as tc
from tagcons.errors import BadInputError, FingerprintMismatchError

IMAGES = (["a", "b"], ["sha-a", "sha-b"], vecs(2))


def test_a_writer_reports_what_the_cache_and_its_parts_hold(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        assert w.stored_attrs() is None and not w.has_pending_parts()
        assert w.previous_attr("fingerprint") is None and w.previous_attr("fingerprint", "new") == "new"
        w.commit_texts(["t1", "t2"], vecs(2, 1))
        w.commit_images(*IMAGES)
        assert w.known_texts() == {"t1", "t2"} and w.known_images() == {"a": "sha-a", "b": "sha-b"}
        w.consolidate()
    with tc.CacheWriter(path, meta()) as again:
        assert again.stored_attrs()["fingerprint"] == tc.compute_fingerprint(meta())
        assert again.previous_attr("fingerprint") == tc.compute_fingerprint(meta())
        assert not again.has_pending_parts()
        again.commit_texts(["t3"], vecs(1, 2))
        assert again.known_texts() == {"t1", "t2", "t3"}
    with tc.CacheWriter(path, meta()) as reopened:  # the part of the interrupted run above is pending
        assert reopened.has_pending_parts() and reopened.known_texts() == {"t1", "t2", "t3"}


def test_annotations_reach_the_consolidated_file(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.annotate(note="diagnostic")
        w.commit_images(*IMAGES)
        w.consolidate()
    with h5py.File(path, "r") as f:
        assert f.attrs["note"] == "diagnostic"


def test_consolidation_shows_progress_only_when_asked(tmp_path, capfd):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.commit_images(*IMAGES)
        w.consolidate()
        assert capfd.readouterr().err == ""
        w.commit_texts(["t"], vecs(1))
        w.consolidate(progress=True)
        assert "consolidate" in capfd.readouterr().err
    with tc.CacheWriter(path, meta(), shard=(0, 2)) as shard:
        shard.commit_texts(["u"], vecs(1))
    tc.merge_parts(path)
    assert capfd.readouterr().err == ""
    with tc.CacheWriter(path, meta(), shard=(1, 2)) as shard:
        shard.commit_texts(["v"], vecs(1))
    tc.merge_parts(path, progress=True)
    assert "consolidate" in capfd.readouterr().err


def test_consolidating_a_cache_without_parts_counts_its_rows(tmp_path):
    path = tmp_path / "c.h5"
    write(path, images=IMAGES, texts=(["t1", "t2", "t3"], vecs(3)), failures=(["f"], ["s"], ["unreadable"]))
    leftover = tmp_path / "c.h5.consolidate-123.tmp"
    leftover.write_bytes(b"half a file from a killed process")
    with tc.CacheWriter(path, meta()) as w:
        stats = w.consolidate()
    assert (stats.parts, stats.images, stats.texts, stats.failed, stats.seconds) == (0, 2, 3, 1, 0.0)
    assert not leftover.exists()
    assert tc.merge_parts(path).images == 2  # a cache with nothing pending merges to itself


def test_merging_keeps_the_stored_precision(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta(store_dtype="float16"), shard=(0, 2)) as shard:
        shard.commit_images(*IMAGES)
    tc.merge_parts(path)
    with h5py.File(path, "r") as f:
        assert f["images/embeds"].dtype == np.float16


def test_the_last_shard_to_finish_merges_and_a_finished_shard_commits_nothing(tmp_path):
    path = tmp_path / "c.h5"
    first = tc.CacheWriter(path, meta(), shard=(0, 2))
    with tc.CacheWriter(path, meta(), shard=(1, 2)) as second:
        first.commit_images(["a"], ["s"], vecs(1))
        second.commit_images(["b"], ["s"], vecs(1))
        assert second.consolidate() is None and not path.exists()  # the other shard still writes
        with pytest.raises(RuntimeError, match=r"shard writer shard-1-of-2 of .* already finished"):
            second.commit_images(["c"], ["s"], vecs(1))
    stats = first.consolidate()
    first.close()
    assert stats.images == 2 and path.exists()


def test_a_planning_writer_refuses_to_commit_or_consolidate(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, None) as planner:
        with pytest.raises(RuntimeError, match="opened for planning only; call bind\\(meta\\) before committing"):
            planner.commit_images(*IMAGES)
        with pytest.raises(RuntimeError, match="opened for planning only; call bind\\(meta\\) before consolidating"):
            planner.consolidate()


def test_refusals_name_both_backbones_and_the_way_out(tmp_path):
    path = tmp_path / "c.h5"
    write(path, images=IMAGES)
    other = meta(backbone="clip", model_id="openai/clip-vit-base-patch32")
    with pytest.raises(FingerprintMismatchError, match=r"backbone tiny vs clip\); write to another --out"):
        tc.CacheWriter(path, other)
    with tc.CacheWriter(tmp_path / "d.h5", other, shard=(0, 2)) as w:
        w.commit_images(*IMAGES)
    (tmp_path / "c.h5.parts").mkdir()
    for part in tc.pending_parts(tmp_path / "d.h5"):
        part.rename(tmp_path / "c.h5.parts" / part.name)
    into_main = rf"backbone clip\) into .*c\.h5 \(fingerprint {tc.compute_fingerprint(meta())}, backbone tiny\)"
    with pytest.raises(FingerprintMismatchError, match=into_main):
        tc.merge_parts(path)


def test_merging_nothing_names_the_path(tmp_path):
    with pytest.raises(BadInputError, match=r"no cache and no part files .* to merge; check the path"):
        tc.merge_parts(tmp_path / "none.h5")
    (tmp_path / "empty.h5.parts").mkdir()
    with pytest.raises(BadInputError, match=r"empty\.h5: the parts folder .* holds no part files; nothing to merge"):
        tc.merge_parts(tmp_path / "empty.h5")


def test_failures_are_remembered_with_the_files_hash(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.commit_failures(["bad.jpg", "gone.jpg"], ["sha-bad", ""], ["cannot identify image", "no such file"])
    with tc.CacheWriter(path, meta()) as reopened:
        assert reopened.known_failures() == {"bad.jpg": "sha-bad", "gone.jpg": ""}


def test_a_merge_takes_the_newest_files_attributes_without_part_bookkeeping(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.annotate(note="old")
        w.commit_images(*IMAGES)
        w.consolidate()
    with tc.CacheWriter(path, meta(), shard=(0, 2)) as shard:
        shard.annotate(note="new")
        shard.commit_texts(["t"], vecs(1))
    tc.merge_parts(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["note"] == "new"
        assert not {"committed_ns", "tag", "seq"} & set(f.attrs)


def test_an_exclusive_writer_clears_a_killed_consolidations_temp_file_when_it_opens(tmp_path):
    path = tmp_path / "c.h5"
    write(path, images=IMAGES)
    leftover = tmp_path / "c.h5.consolidate-99.tmp"
    other = tmp_path / "other.h5.consolidate-99.tmp"  # another cache's: not ours to delete
    leftover.write_bytes(b"")
    other.write_bytes(b"")
    with tc.CacheWriter(path, meta()):
        assert not leftover.exists() and other.exists()


def test_a_writer_makes_missing_folders_and_holds_the_lock_file_beside_the_cache(tmp_path):
    path = tmp_path / "new" / "deeper" / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        assert (tmp_path / "new" / "deeper" / "c.h5.lock").is_file()
        w.commit_images(*IMAGES)
        w.consolidate()
    assert path.is_file()


def test_parts_are_stored_at_the_caches_precision(tmp_path):
    with tc.CacheWriter(tmp_path / "c.h5", meta(store_dtype="float16")) as w:
        part = w.commit_images(*IMAGES)
    with h5py.File(part, "r") as f:
        assert f["images/embeds"].dtype == np.float16


def test_a_shard_clears_only_its_own_stale_temp_files(tmp_path):
    path = tmp_path / "c.h5"
    parts = tmp_path / "c.h5.parts"
    parts.mkdir()
    own, other = parts / "shard-0-of-2-000000.h5.tmp", parts / "shard-1-of-2-000000.h5.tmp"
    own.write_bytes(b"")
    other.write_bytes(b"")  # shard 1 may be writing it right now
    with tc.CacheWriter(path, meta(), shard=(0, 2)):
        assert not own.exists() and other.exists()


def test_commit_columns_are_checked_and_failure_reasons_stored_as_text(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        with pytest.raises(ValueError, match=r"^expected a tuple of 3 columns, got 2$"):
            w.commit(images=(["a"], vecs(1)))
        w.commit_failures(["bad.jpg"], ["sha"], [OSError("truncated file")])
        w.consolidate()
    with h5py.File(path, "r") as f:
        assert [r.decode() if isinstance(r, bytes) else r for r in f["failed/reasons"][:]] == ["truncated file"]


def test_consolidation_clears_its_own_stale_temp_file_and_no_other(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.commit_images(*IMAGES)
        own = tmp_path / "c.h5.consolidate-7.tmp"
        other = tmp_path / "other.h5.consolidate-7.tmp"
        own.write_bytes(b"")
        other.write_bytes(b"")
        w.consolidate()
    assert not own.exists() and other.exists()


@pytest.fixture
def make_read_only(monkeypatch):
    """Call it to make every folder refuse writes, as a read-only mount does (even for root, unlike chmod)."""
    import errno
    import os

    import tagcons.cache.lock as lock

    real_open = os.open

    def refuse_writes(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    return lambda: monkeypatch.setattr(lock.os, "open", refuse_writes)


def test_a_read_only_folder_can_be_planned_from_but_not_written(tmp_path, make_read_only):
    path = tmp_path / "c.h5"
    write(path, images=IMAGES)
    make_read_only()
    with tc.CacheWriter(path, None) as planner:  # a rerun with everything cached needs no write access
        assert not planner.writable and planner.known_images() == {"a": "sha-a", "b": "sha-b"}
        with pytest.raises(BadInputError, match=r"^cannot write .*c\.h5: its folder .* is read-only; make it writable"):
            planner.bind(meta())
    with pytest.raises(BadInputError, match=r"is read-only \(Read-only file system\); make it writable"):
        tc.merge_parts(path)
