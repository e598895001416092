"""Cache writer/reader on synthetic arrays: layout, attrs, replacement rules, lookups, errors."""

import json
import logging
import re
import unicodedata

import h5py
import numpy as np
import pytest

import tagcons.cache as tc
from tagcons.errors import BadInputError, CacheBusyError, FingerprintMismatchError

D = 8


def meta(**kw):
    base = dict(
        backbone="tiny",
        model_id="tagcons/tiny-clip",
        revision=None,
        projection_dim=D,
        text_template="{}",
        store_dtype="float32",
        settings={"image_size": 32, "strip_hash": False},
    )
    return tc.CacheMeta(**{**base, **kw})


def vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def write(path, m=None, images=None, texts=None, failures=None):
    with tc.CacheWriter(path, m or meta()) as w:
        w.commit(images=images, texts=texts, failures=failures)
        w.consolidate()


def test_roundtrip_keys_embeds_attrs_schema(tmp_path):
    path = tmp_path / "c.h5"
    img, txt = vecs(5, 1), vecs(3, 2)
    m = meta(revision="abc123")
    write(
        path,
        m,
        images=([f"i{k}.jpg" for k in range(5)], [f"sha{k}" for k in range(5)], img),
        texts=(["#a", "#b", "#c"], txt),
        failures=(["bad.jpg"], [""], ["cannot identify image file"]),
    )
    with tc.open(path) as c:
        assert c.image_keys == [f"i{k}.jpg" for k in range(5)] and c.text_keys == ["#a", "#b", "#c"]
        np.testing.assert_array_equal(c.image_embeddings(), img)
        np.testing.assert_array_equal(c.text_embeddings(), txt)
        assert c.failed == {"bad.jpg": "cannot identify image file"}
        assert c.image_sha256["i3.jpg"] == "sha3"
        assert c.fingerprint == tc.compute_fingerprint(m) and c.backbone == "tiny" and c.revision == "abc123"
        assert c.projection_dim == D and c.model_id == "tagcons/tiny-clip" and c.settings["image_size"] == 32
        assert c.attrs["schema"] == tc.SCHEMA == "tagcons.cache/1"
        assert set(json.loads(c.attrs["created_with"])) == {"tagcons", "torch", "transformers"}
    with h5py.File(path, "r") as f:  # other analyses read it with plain h5py
        assert f["images/embeds"].dtype == np.float32 and f["images/embeds"].chunks is not None
        assert f["failed/sha256"].asstr()[0] == ""


def test_float16_store_and_normalise(tmp_path):
    path = tmp_path / "c.h5"
    img = vecs(4) * 10
    write(path, meta(store_dtype="float16"), images=(list("abcd"), list("ssss"), img))
    with h5py.File(path, "r") as f:
        assert f["images/embeds"].dtype == np.float16
    with tc.open(path) as c:
        ((keys, raw),) = c.iter_rows("images", dtype=None)
        assert raw.dtype == np.float16 and keys == list("abcd")
        np.testing.assert_array_equal(next(c.iter_rows("images"))[1], raw.astype(np.float32))
        out = c.image_embeddings()
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, img, rtol=1e-3, atol=1e-2)
        unit = c.image_embeddings(normalise=True)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_unicode_keys_roundtrip(tmp_path):
    path = tmp_path / "c.h5"
    keys = [unicodedata.normalize("NFC", k) for k in ["사진/고양이.jpg", "#여행", "#맛집 ", "emoji_😀.png"]]
    write(path, images=(keys, ["s"] * 4, vecs(4)), texts=(keys, vecs(4, 3)))
    with tc.open(path) as c:
        assert c.image_keys == keys and c.text_keys == keys
        assert all(unicodedata.is_normalized("NFC", k) for k in c.text_keys)


def test_fingerprint_covers_what_changes_numbers():
    base = tc.compute_fingerprint(meta())
    assert tc.compute_fingerprint(meta(backbone="other-name")) == base  # the short name alone does not count
    for change in [
        dict(model_id="x"),
        dict(revision="r1"),
        dict(text_template="a photo of {}"),
        dict(store_dtype="float16"),
        dict(settings={"image_size": 64, "strip_hash": False}),
        dict(settings={"image_size": 32, "strip_hash": True}),
    ]:
        assert tc.compute_fingerprint(meta(**change)) != base, change


def test_meta_rejects_bad_values():
    with pytest.raises(ValueError):
        meta(store_dtype="bfloat16")
    with pytest.raises(ValueError):
        meta(settings={"x": object()})


def test_incremental_commits_resume_and_consolidate(tmp_path):
    path = tmp_path / "c.h5"
    img = vecs(30)
    keys = [f"k{i}" for i in range(30)]
    with tc.CacheWriter(path, meta()) as w:
        for lo in range(0, 20, 5):
            w.commit_images(keys[lo : lo + 5], ["s"] * 5, img[lo : lo + 5])
        assert len(tc.pending_parts(path)) == 4 and not path.exists()
    with tc.CacheWriter(path, meta()) as w:  # resume: sees the parts of the first session
        assert set(w.known_images()) == set(keys[:20])
        w.commit_images(keys[20:], ["s"] * 10, img[20:])
        stats = w.consolidate()
    assert stats.parts == 5 and stats.images == 30
    assert tc.pending_parts(path) == [] and not (tmp_path / "c.h5.parts").exists()
    with tc.open(path) as c:
        np.testing.assert_array_equal(c.read_rows("images", [c.index("images")[k] for k in keys]), img)
    with tc.CacheWriter(path, meta()) as w:  # the consolidated file is a resume point too
        assert set(w.known_images()) == set(keys)
        assert w.consolidate().parts == 0


def test_recommit_replaces_row(tmp_path):
    path = tmp_path / "c.h5"
    old, new = vecs(2, 1), vecs(1, 2)
    write(path, images=(["a", "b"], ["sa", "sb"], old), texts=(["t"], vecs(1, 3)))
    write(path, images=(["a"], ["sa2"], new), texts=(["t"], vecs(1, 4)))
    with tc.open(path) as c:
        assert sorted(c.image_keys) == ["a", "b"] and c.text_keys == ["t"]
        np.testing.assert_array_equal(c.read_rows("images", [c.index("images")["a"]]), new)
        np.testing.assert_array_equal(c.read_rows("images", [c.index("images")["b"]]), old[1:])
        np.testing.assert_array_equal(c.text_embeddings(), vecs(1, 4))
        assert c.image_sha256["a"] == "sa2"


def test_failure_then_success_and_success_then_failure(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.commit(images=(["ok"], ["s1"], vecs(1)), failures=(["broken"], ["s2"], ["truncated"]))
        assert w.known_failures() == {"broken": "s2"}
        w.commit_images(["broken"], ["s3"], vecs(1, 5))  # file fixed: success removes the failure
        w.commit_failures(["ok"], ["s4"], ["file changed and is now unreadable"])  # stale embedding dropped
        assert w.known_images() == {"broken": "s3"} and w.known_failures() == {"ok": "s4"}
        w.consolidate()
    with tc.open(path) as c:
        assert c.image_keys == ["broken"] and c.failed == {"ok": "file changed and is now unreadable"}


def test_commit_validates_shapes(tmp_path):
    with tc.CacheWriter(tmp_path / "c.h5", meta()) as w:
        with pytest.raises(ValueError, match="shape"):
            w.commit_images(["a"], ["s"], np.zeros((1, D + 1)))
        with pytest.raises(ValueError, match="length"):
            w.commit_images(["a", "b"], ["s"], np.zeros((2, D)))
        assert w.commit() is None and tc.pending_parts(tmp_path / "c.h5") == []


def test_empty_consolidate_creates_valid_cache(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        assert w.consolidate().images == 0
    with tc.open(path) as c:
        assert c.image_keys == [] and c.image_embeddings().shape == (0, D)
        assert c.lookup(["a"], ["b"]).present.tolist() == [False]


def test_second_writer_refused_then_allowed(tmp_path):
    path = tmp_path / "c.h5"
    with tc.CacheWriter(path, meta()) as w:
        w.commit_images(["a"], ["s"], vecs(1))
        with pytest.raises(CacheBusyError, match="lock"):
            tc.CacheWriter(path, meta())
        with pytest.raises(CacheBusyError):
            tc.CacheWriter(path, meta(), shard=(0, 2))
        with pytest.raises(CacheBusyError):
            tc.merge_parts(path)
    with tc.CacheWriter(path, meta()):  # released on close
        pass


def test_fingerprint_mismatch_refused_by_writer_and_merge(tmp_path):
    path = tmp_path / "c.h5"
    write(path, images=(["a"], ["s"], vecs(1)))
    other = meta(model_id="openai/clip-vit-base-patch32", backbone="clip")
    with pytest.raises(FingerprintMismatchError) as err:
        tc.CacheWriter(path, other)
    msg = str(err.value)
    assert tc.compute_fingerprint(meta()) in msg and tc.compute_fingerprint(other) in msg
    assert "clip" in msg and "tiny" in msg and "--out" in msg
    # parts from another run's settings are refused too, by a writer and by merge
    other_path = tmp_path / "d.h5"
    with tc.CacheWriter(other_path, other) as w:
        w.commit_images(["x"], ["s"], vecs(1))
    (tmp_path / "c.h5.parts").mkdir()
    for part in tc.pending_parts(other_path):
        part.rename(tmp_path / "c.h5.parts" / part.name)
    with pytest.raises(FingerprintMismatchError):
        tc.CacheWriter(path, meta())
    with pytest.raises(FingerprintMismatchError, match="cannot merge"):
        tc.merge_parts(path)


def test_lookup_alignment_missing_and_failed(tmp_path):
    path = tmp_path / "c.h5"
    img, txt = vecs(3, 1), vecs(2, 2)
    write(
        path,
        images=(["a", "b", "c"], ["s"] * 3, img),
        texts=(["t1", "t2"], txt),
        failures=(["f"], ["s"], ["unreadable"]),
    )
    images = ["c", "a", "zz", "f", "a", "b", "f"]
    texts = ["t2", "t1", "t1", "t1", "nope", "t2", "t1"]
    with tc.open(path) as c:
        res = c.lookup(images, texts, normalise=False)
        unit = c.lookup(images, texts)
    assert res.present.tolist() == [True, True, False, False, False, True, False]
    np.testing.assert_array_equal(res.image_embeds, img[[2, 0, 1]])
    np.testing.assert_array_equal(res.text_embeds, txt[[1, 0, 1]])
    assert res.missing_images == ["zz"] and res.failed_images == ["f"] and res.missing_texts == ["nope"]
    assert res.image_embeds.dtype == np.float32
    np.testing.assert_allclose(
        unit.image_embeds, img[[2, 0, 1]] / np.linalg.norm(img[[2, 0, 1]], axis=1)[:, None], rtol=1e-6
    )


def test_iter_rows_and_read_rows(tmp_path):
    path = tmp_path / "c.h5"
    n = 300
    img = vecs(n, 7)
    keys = [f"k{i:04d}" for i in range(n)]
    write(path, images=(keys, ["s"] * n, img))
    with tc.open(path) as c:
        chunks = list(c.iter_rows("images", chunk_rows=128))
        assert [len(k) for k, _ in chunks] == [128, 128, 44]
        assert sum((k for k, _ in chunks), []) == keys
        np.testing.assert_array_equal(np.concatenate([e for _, e in chunks]), img)
        idx = np.array([299, 3, 3, 150, 0, 17, 18, 19, 250])
        np.testing.assert_array_equal(c.read_rows("images", idx), img[idx])
        np.testing.assert_allclose(np.linalg.norm(c.read_rows("images", idx, normalise=True), axis=1), 1, rtol=1e-5)
        assert c.read_rows("images", []).shape == (0, D)
        with pytest.raises(IndexError):
            c.read_rows("images", [n])
        with pytest.raises(ValueError):
            c.read_rows("pairs", [0])


def test_open_errors_name_the_path(tmp_path, caplog):
    missing = tmp_path / "none.h5"
    with pytest.raises(BadInputError, match="none.h5"):
        tc.open(missing)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(BadInputError, match="junk.h5"):
        tc.open(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    with pytest.raises(BadInputError, match="not a tagcons cache"):
        tc.open(foreign)
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.attrs["schema"] = "tagcons.cache/0"
    with pytest.raises(BadInputError, match="schema"):
        tc.open(old)


def test_pending_parts_warn_and_are_not_read(tmp_path, caplog):
    path = tmp_path / "c.h5"
    write(path, images=(["a"], ["s"], vecs(1)))
    with tc.CacheWriter(path, meta()) as w:
        w.commit_images(["b"], ["s"], vecs(1, 2))
    with caplog.at_level(logging.WARNING, logger="tagcons.cache"), tc.open(path) as c:
        assert c.image_keys == ["a"]
    assert "tagcons cache merge" in caplog.text and str(path) in caplog.text
    stats = tc.merge_parts(path)
    assert stats.parts == 1 and stats.images == 2
    only_parts = tmp_path / "p.h5"
    with tc.CacheWriter(only_parts, meta()) as w:
        w.commit_images(["b"], ["s"], vecs(1, 2))
    with pytest.raises(BadInputError, match="cache merge"):
        tc.open(only_parts)
    with pytest.raises(BadInputError, match="nothing|no cache"):
        tc.merge_parts(tmp_path / "absent.h5")


def test_shard_of_is_stable_and_balanced():
    assert tc.shard_of("사진/a.jpg", 4) == tc.shard_of("사진/a.jpg", 4)
    assert tc.shard_of("img/0001.jpg", 7) == 1  # fixed value: the same on every machine and Python
    counts = np.bincount([tc.shard_of(f"img/{i}.jpg", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900


def test_filesystem_without_locks_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(BadInputError, match="NFS") as err:
        tc.CacheWriter(tmp_path / "c.h5", meta())
    assert "HDF5_USE_FILE_LOCKING" in str(err.value) and not isinstance(err.value, CacheBusyError)


def documented_schema_cache(path, failed=("gone.png",)):
    """A cache as another tool writes it from docs/cache-schema.md: required items only, no /failed/sha256."""
    strings = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        for name, value in {
            "schema": tc.SCHEMA,
            "backbone": "mine",
            "model_id": "me/mine",
            "fingerprint": "f0",
        }.items():
            f.attrs[name] = value
        f.attrs["projection_dim"] = D
        f["images/keys"] = np.array(["a.png", "b.png"], dtype=object).astype(strings)
        f["images/sha256"] = np.array(["1", "2"], dtype=object).astype(strings)
        f["images/embeds"] = vecs(2)
        f["texts/keys"] = np.array(["#x"], dtype=object).astype(strings)
        f["texts/embeds"] = vecs(1, 1)
        f.create_dataset("failed/keys", data=np.array(failed, dtype=object), dtype=strings)
        f.create_dataset("failed/reasons", data=np.array(["file not found"] * len(failed), dtype=object), dtype=strings)


def test_a_cache_written_to_the_documented_schema_opens_without_failed_hashes(tmp_path):
    path = tmp_path / "foreign.h5"
    documented_schema_cache(path)
    with tc.open(path) as cache:
        assert cache.image_keys == ["a.png", "b.png"] and cache.failed == {"gone.png": "file not found"}
        lookup = cache.lookup(["a.png", "gone.png"], ["#x", "#x"])
    assert lookup.present.tolist() == [True, False] and lookup.failed_images == ["gone.png"]
    from tagcons.cache.verify import verify_cache

    assert verify_cache(path).ok


def test_a_cache_without_a_required_attribute_is_named_not_called_damaged(tmp_path):
    path = tmp_path / "foreign.h5"
    documented_schema_cache(path)
    with h5py.File(path, "a") as f:
        del f.attrs["fingerprint"]
    with pytest.raises(BadInputError, match="fingerprint missing") as info:
        tc.open(path)
    assert "damaged" not in str(info.value)


def test_the_schema_page_lists_every_dataset_and_attribute_as_the_code_reads_them():
    """docs/cache-schema.md: every dataset and root attribute tagcons writes, required exactly where the reader is."""
    from pathlib import Path

    from tagcons.cache.schema import LAYOUT, OPTIONAL_LAYOUT, REQUIRED_ATTRS, meta_attrs

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "cache-schema.md").read_text(encoding="utf-8")
    rows = {m[0]: m[1] for m in re.findall(r"^\| `/?([a-z0-9_/]+)` \| (yes|no) \|", page, flags=re.M)}
    datasets = {name: "yes" for name in LAYOUT} | {name: "no" for name in OPTIONAL_LAYOUT}
    attributes = {name: "yes" if name in REQUIRED_ATTRS else "no" for name in [*meta_attrs(meta()), "texts_truncated"]}
    assert rows == datasets | attributes
    guide = (root / "docs" / "cache.md").read_text(encoding="utf-8")
    short = guide[guide.index("# The cache") : guide.index("```python", guide.index("# The cache"))]
    assert all(f"/{name}`" in short for name in LAYOUT) and "`/failed/sha256`" in short and "optional" in short
    required = re.search(r"required: `([^`]+)`; optional: `([^`]+)`", short)
    assert required and set(required[1].split(", ")) == set(REQUIRED_ATTRS)
    assert set(required[2].split(", ")) == set(attributes) - set(REQUIRED_ATTRS)
