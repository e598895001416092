"""Fault suite, cache side (issue 10 defects 2, 3, 8, 11): damaged caches, a full disk, a read-only
folder, misleading messages, and the lock and no-op plan that come before the model loads.

Each test failed before its fix. Caches are written from synthetic arrays (no model); where `embed`
runs, the model loader is replaced by one that fails the test, since these paths must never load it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from PIL import Image

import tagcons.cache as tc
import tagcons.embed.extractor as extractor
from tagcons.cache.lock import FileLock
from tagcons.cache.writer import lock_path
from tagcons.cli import main
from tagcons.data.pairs import PairColumns, load_pairs
from tagcons.errors import BadInputError, CacheBusyError, FingerprintMismatchError

REPO = Path(__file__).resolve().parents[2]
D = 8
TINY = dict(backbone="tiny", model_id="tagcons/tiny-clip", revision="builtin", projection_dim=D)
TINY_SETTINGS = {"compute_dtype": "float32", "strip_hash": False}


def meta(**overrides) -> tc.CacheMeta:
    return tc.CacheMeta(**{**TINY, "settings": dict(TINY_SETTINGS), **overrides})


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def write_cache(path: Path, n_images: int = 40, n_texts: int = 30, m: tc.CacheMeta | None = None) -> Path:
    keys = [f"img_{i:03d}.png" for i in range(n_images)]
    with tc.CacheWriter(path, m or meta()) as writer:
        writer.commit(
            images=(keys, [f"sha{i}" for i in range(n_images)], vecs(n_images)),
            texts=([f"#t{i}" for i in range(n_texts)], vecs(n_texts, 1)),
        )
        writer.consolidate()
    return path


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


# --- defect 2: a damaged cache -------------------------------------------------------------------------


def test_new_caches_checksum_their_embeddings(tmp_path):
    path = write_cache(tmp_path / "c.h5")
    with h5py.File(path, "r") as f:
        assert f["images/embeds"].fletcher32 and f["texts/embeds"].fletcher32


def poke(path: Path, dataset: str, rows, value=np.nan) -> None:
    """Overwrite rows in place the way a bad disk or a stray program would (checksums recomputed)."""
    with h5py.File(path, "r+") as f:
        f[dataset][rows] = value


def test_nan_rows_stop_every_reader_naming_dataset_and_repair(tmp_path):
    path = write_cache(tmp_path / "c.h5")
    poke(path, "images/embeds", [3, 7])
    with tc.open(path) as cache:
        for read in (
            lambda: cache.read_rows("images", [1, 3]),
            cache.image_embeddings,
            lambda: list(cache.iter_rows("images", chunk_rows=16)),
            lambda: cache.lookup(["img_007.png"], ["#t0"]),
        ):
            with pytest.raises(BadInputError, match=r"/images/embeds holds NaN.*verify --repair"):
                read()
        assert np.isfinite(cache.read_rows("images", [0, 1, 2])).all()  # good rows still read


def rewrite_dataset(path: Path, name: str, data) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=data)


def test_keys_and_rows_out_of_step_are_refused_on_open(tmp_path):
    path = write_cache(tmp_path / "c.h5", n_images=12)
    rewrite_dataset(path, "images/embeds", vecs(10))
    with pytest.raises(BadInputError, match=r"images/keys has 12 rows but images/embeds has 10.*verify --repair"):
        tc.open(path)


def test_wrong_width_is_refused_on_open(tmp_path):
    path = write_cache(tmp_path / "c.h5", n_texts=5)
    rewrite_dataset(path, "texts/embeds", np.zeros((5, D + 1), np.float32))
    with pytest.raises(BadInputError, match=r"texts/embeds has shape \(5, 9\), expected \(rows, 8\)"):
        tc.open(path)


def flip_chunk_bytes(path: Path, dataset: str) -> None:
    """Damage the stored bytes of the first chunk behind HDF5's back (a bad sector)."""
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 4)
        raw = bytearray(handle.read(8))
        handle.seek(offset + 4)
        handle.write(bytes(b ^ 0x5A for b in raw))


def test_damaged_bytes_fail_their_checksum_with_a_one_line_error(tmp_path):
    path = write_cache(tmp_path / "c.h5")
    flip_chunk_bytes(path, "texts/embeds")
    with tc.open(path) as cache, pytest.raises(BadInputError, match=r"/texts/embeds cannot be read.*--repair"):
        cache.text_embeddings()


def test_cache_verify_reports_every_problem_and_repair_lets_embed_redo_the_rows(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5")
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 0 and "ok" in out
    poke(path, "images/embeds", [5], np.inf)
    flip_chunk_bytes(path, "texts/embeds")
    code, out, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err) and "--repair" in err
    assert "/images/embeds: 1 row(s) hold NaN or inf (rows 5)" in out
    assert "/texts/embeds: 30 row(s) fail their checksum" in out

    code, out, err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "dropped 1 image and 30 text row(s)" in out
    assert cli(["cache", "verify", str(path)], capsys)[0] == 0
    with tc.CacheWriter(path, None) as writer:  # what the next embed plans from
        assert "img_005.png" not in writer.known_images() and len(writer.known_images()) == 39
        assert writer.known_texts() == set()


def test_a_single_nan_value_damages_its_row_for_verify_repair_and_readers(tmp_path, capsys):
    """One bad value is enough: the row is reported, --repair drops it (so embed redoes it), readers refuse it."""
    path = write_cache(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        f["images/embeds"][5, 3] = np.nan  # one value of one row, the rest of the row intact
        f["texts/embeds"][2, 0] = np.inf
    code, out, _ = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and "/images/embeds: 1 row(s) hold NaN or inf (rows 5)" in out
    assert "/texts/embeds: 1 row(s) hold NaN or inf (rows 2)" in out
    with tc.open(path) as cache:
        with pytest.raises(BadInputError, match=r"/images/embeds holds NaN"):
            cache.read_rows("images", [4, 5])
        with pytest.raises(BadInputError, match=r"/texts/embeds holds NaN"):
            cache.text_embeddings()
    code, out, _ = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 0 and "dropped 1 image and 1 text row(s)" in out
    assert cli(["cache", "verify", str(path)], capsys)[0] == 0
    with tc.CacheWriter(path, None) as writer:  # what the next embed re-embeds
        assert set(writer.known_images()) == {f"img_{i:03d}.png" for i in range(40)} - {"img_005.png"}
        assert set(writer.known_texts()) == {f"#t{i}" for i in range(30)} - {"#t2"}


def test_cache_verify_finds_keys_without_rows_and_damaged_parts(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5", n_images=12)
    with tc.CacheWriter(path, meta()) as writer:  # a pending part (an interrupted run), then damaged
        part = writer.commit_texts(["#pending"], vecs(1))
    poke(part, "texts/embeds", [0])
    rewrite_dataset(path, "images/embeds", vecs(10))
    code, out, _ = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and "images/keys has 12 rows but images/embeds has 10" in out
    assert f"{part}: /texts/embeds: 1 row(s) hold NaN" in out
    assert cli(["cache", "verify", "--repair", str(path)], capsys)[0] == 0
    assert not part.exists()
    with tc.open(path) as cache:
        assert len(cache.image_keys) == 10 and np.isfinite(cache.image_embeddings()).all()


# --- defect 8 (cache side): embed over a damaged layout ----------------------------------------------------


@pytest.fixture
def image_set(tmp_path):
    """(pairs.csv, images folder, sha256 by key): three small PNGs, two hashtags each."""
    images = tmp_path / "images"
    images.mkdir()
    rows, hashes = ["Image Filename,Hashtag,Score"], {}
    for i in range(3):
        name = f"img_{i:03d}.png"
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(images / name)
        hashes[name] = hashlib.sha256((images / name).read_bytes()).hexdigest()
        rows += [f"{name},#t{i},{1 + i}", f"{name},#t{i + 1},{2 + i}"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images, hashes


def complete_cache(path: Path, hashes: dict, m: tc.CacheMeta | None = None) -> Path:
    """A cache holding every image and text of `image_set`, as `embed --backbone tiny` on a CPU writes it."""
    texts = [f"#t{i}" for i in range(4)]
    with tc.CacheWriter(path, m or meta()) as writer:
        writer.commit(images=(list(hashes), list(hashes.values()), vecs(len(hashes))), texts=(texts, vecs(4, 1)))
        writer.consolidate()
    return path


@pytest.fixture
def no_model(monkeypatch):
    """These paths must never load a model: loading one fails the test."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(extractor, "load_backbone", refuse)


def embed_args(pairs: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", "--data", str(pairs), "--images", str(images), "--backbone", "tiny", "--out", str(out)] + [
        "--workers",
        "0",
        *extra,
    ]


@pytest.mark.parametrize("damage", ["texts/embeds missing", "fewer rows than keys"])
def test_embed_over_a_damaged_layout_exits_2_in_one_line(tmp_path, image_set, no_model, capsys, damage):
    pairs, images, hashes = image_set
    path = complete_cache(tmp_path / "c.h5", hashes)
    with h5py.File(path, "r+") as f:
        if damage == "texts/embeds missing":
            del f["texts/embeds"]
        else:
            data = f["images/embeds"][:2]
            del f["images/embeds"]
            f.create_dataset("images/embeds", data=data)
    code, _, err = cli(embed_args(pairs, images, path), capsys)
    assert code == 2 and one_line(err) and "damaged tagcons cache" in err


# --- defect 11: messages, and the lock before the model -------------------------------------------------


def test_fingerprint_mismatch_names_the_setting_that_differs(tmp_path):
    path = write_cache(tmp_path / "c.h5")
    with pytest.raises(FingerprintMismatchError, match=r"text_template '\{\}' vs 'a photo of \{\}'") as info:
        tc.CacheWriter(path, meta(text_template="a photo of {}"))
    assert "backbone" not in str(info.value)  # the same backbone on both sides: not named as a difference


def test_utf16_pairs_file_error_names_the_encoding_without_nul_bytes(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("Image Filename,Hashtag,Score\na.png,#x,3\n", encoding="utf-16")
    with pytest.raises(BadInputError) as error:
        load_pairs(path, PairColumns())
    assert "\x00" not in str(error.value) and "UTF-16" in str(error.value)


def test_the_lock_is_taken_before_the_model_loads(tmp_path, image_set, no_model):
    pairs, images, _ = image_set
    out = tmp_path / "c.h5"
    holder = FileLock(lock_path(out), out).acquire()
    try:
        with pytest.raises(CacheBusyError):
            extractor.run_embed(extractor.EmbedConfig(pairs, images, "tiny", out, workers=0))
    finally:
        holder.release()


# --- issue 15: a no-op embed exits before importing transformers -----------------------------------------


def test_noop_rerun_plans_from_hashes_and_never_imports_transformers(tmp_path, image_set):
    pairs, images, hashes = image_set
    path = complete_cache(tmp_path / "c.h5", hashes)
    script = textwrap.dedent(
        f"""
        import sys
        from tagcons.cli import main
        try:
            main({embed_args(pairs, images, path)!r})
        except SystemExit as e:
            assert not e.code, e.code
        print("transformers imported:", "transformers" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "images 0 new, 3 cached" in done.stdout and "texts 0 new, 4 cached" in done.stdout
    assert "transformers imported: False" in done.stdout


def test_noop_rerun_with_other_settings_still_checks_the_fingerprint(tmp_path, image_set, no_model):
    pairs, images, hashes = image_set
    path = complete_cache(tmp_path / "c.h5", hashes)
    config = extractor.EmbedConfig(pairs, images, "tiny", path, workers=0, text_templates=("a photo of {}",))
    with pytest.raises(AssertionError, match="the model was loaded"):  # not a no-op: the full path decides
        extractor.run_embed(config)


# --- defect 3: full disk, read-only folder, half-written runs ---------------------------------------------


def test_too_little_free_space_refuses_commit_and_consolidation_and_keeps_the_cache(tmp_path, monkeypatch):
    path = write_cache(tmp_path / "c.h5")
    with tc.CacheWriter(path, meta()) as writer:
        writer.commit_texts(["#new"], vecs(1))  # a part committed while there was space
        before = path.read_bytes()
        monkeypatch.setattr("tagcons.cache.diskspace.shutil.disk_usage", lambda _p: SimpleNamespace(free=100 << 10))
        with pytest.raises(BadInputError, match=r"0.1 MiB free, .* needed"):
            writer.commit_texts(["#newer"], vecs(1))
        with pytest.raises(BadInputError, match=r"0.1 MiB free, .* needed"):
            writer.consolidate()
    assert path.read_bytes() == before and len(tc.pending_parts(path)) == 1
    assert [p for p in tmp_path.rglob("*.tmp")] == []


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as a full disk does
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""

COMMIT = (
    LIMITED
    + """
import numpy as np
import tagcons.cache as tc
from tagcons.errors import BadInputError
with tc.CacheWriter(sys.argv[2], tc.CacheMeta("tiny", "tagcons/tiny-clip", "builtin", 256)) as writer:
    try:
        writer.commit_texts([f"t{i}" for i in range(1000)], np.ones((1000, 256), np.float32))
    except BadInputError as e:
        print("ERROR", e)
"""
)
MERGE = LIMITED + "from tagcons.cli import main\nmain(['-q', 'cache', 'merge', sys.argv[2]])\n"


def run_limited(script: str, limit: int, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", script, str(limit), str(path)], capture_output=True, text=True, env=env, timeout=300
    )


def small_cache(path: Path, pending_rows: int = 0) -> Path:
    with tc.CacheWriter(path, tc.CacheMeta("tiny", "tagcons/tiny-clip", "builtin", 256)) as writer:
        writer.commit_texts(["a"], np.ones((1, 256), np.float32))
        writer.consolidate()
        if pending_rows:
            writer.commit_texts([f"t{i}" for i in range(pending_rows)], np.ones((pending_rows, 256), np.float32))
    return path


def test_a_failing_commit_is_one_line_and_leaves_no_half_written_file(tmp_path):
    """A real low-level write failure: RLIMIT_FSIZE makes write() fail with EFBIG past the limit, as a full
    disk fails with ENOSPC. Before the fix: an h5py traceback, a leftover .tmp part and SIGSEGV."""
    path = small_cache(tmp_path / "c.h5")
    before = path.read_bytes()
    done = run_limited(COMMIT, 100_000, path)
    assert done.returncode == 0, done.stderr
    assert "ERROR cannot write" in done.stdout and "File too large" in done.stdout
    assert "Traceback" not in done.stderr
    assert list(tmp_path.rglob("*.tmp")) == [] and path.read_bytes() == before and tc.pending_parts(path) == []


def test_a_failing_consolidation_exits_2_in_one_line_and_a_rerun_completes(tmp_path, capsys):
    path = small_cache(tmp_path / "c.h5", pending_rows=1000)
    before = path.read_bytes()
    done = run_limited(MERGE, 600_000, path)
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "cannot write" in done.stderr and "File too large" in done.stderr
    assert list(tmp_path.glob("*.tmp")) == [] and path.read_bytes() == before and len(tc.pending_parts(path)) == 1
    assert cli(["cache", "merge", str(path)], capsys)[0] == 0
    with tc.open(path) as cache:
        assert len(cache.text_keys) == 1001


def raise_read_only(monkeypatch, folder: Path) -> None:
    """Make creating or writing files in `folder` fail with EROFS, as on a read-only mount. (Tests may run
    as root, where chmod does not stop writes, so the refusal is simulated at os.open.)"""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


def test_read_only_folder_noop_needs_no_write_and_new_work_exits_2(tmp_path, image_set, no_model, capsys, monkeypatch):
    pairs, images, hashes = image_set
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    path = complete_cache(out_dir / "c.h5", hashes)
    (out_dir / "c.h5.lock").unlink()  # a copied cache: not even a lock file to open
    before = snapshot(out_dir)
    raise_read_only(monkeypatch, out_dir)
    code, out, err = cli(embed_args(pairs, images, path), capsys)
    assert code == 0 and "3 cached" in out and snapshot(out_dir) == before
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("img_000.png,#brand-new,4\n")
    code, _, err = cli(embed_args(pairs, images, path), capsys)
    assert code == 2 and one_line(err) and "read-only" in err
    assert snapshot(out_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; the EROFS test above covers it")
def test_read_only_folder_by_permissions(tmp_path, image_set, no_model, capsys):
    pairs, images, hashes = image_set
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    path = complete_cache(out_dir / "c.h5", hashes)
    out_dir.chmod(0o555)
    try:
        code, out, err = cli(embed_args(pairs, images, path), capsys)
        assert code == 0 and "3 cached" in out
    finally:
        out_dir.chmod(0o755)


def test_fit_head_failing_midway_leaves_no_half_run_and_a_rerun_works(tmp_path, monkeypatch, capsys):
    from test_heads_support import planted, write_pairs
    from test_heads_support import write_cache as write_head_cache

    data = planted(n_images=12, per_image=5, dim=8, seed=3)
    pairs = write_pairs(data, tmp_path / "pairs.csv")
    cache = write_head_cache(data, tmp_path / "cache.h5")
    out = tmp_path / "run"
    args = ["fit-head", "--cache", str(cache), "--data", str(pairs), "--head", "threshold", "--out", str(out)]

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr("tagcons.heads.fit.write_config", disk_full)
        code, _, err = cli(args, capsys)
    assert code == 2 and one_line(err) and "No space left" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")] == []
    code, out_text, err = cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["n_test"] > 0


def test_run_json_files_are_written_atomically(tmp_path, monkeypatch):
    from tagcons.evaluate.rundir import write_json

    target = write_json(tmp_path / "metrics.json", {"accuracy": 0.5})
    real_write_text = Path.write_text

    def disk_fills_midway(self, text, *args, **kwargs):
        real_write_text(self, text[:5], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", disk_fills_midway)
    with pytest.raises(OSError):
        write_json(target, {"accuracy": 0.9})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"accuracy": 0.5} and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_fit_head_and_predict_on_a_nan_cache_exit_2_naming_the_dataset(tmp_path, capsys):
    from test_heads_support import planted, write_pairs
    from test_heads_support import write_cache as write_head_cache

    data = planted(n_images=12, per_image=5, dim=8, seed=4)
    pairs = write_pairs(data, tmp_path / "pairs.csv")
    cache = write_head_cache(data, tmp_path / "cache.h5")
    run = tmp_path / "run"
    fit = ["fit-head", "--cache", str(cache), "--data", str(pairs), "--head", "logreg", "--out", str(run)]
    assert cli(fit, capsys)[0] == 0
    poke(cache, "images/embeds", [2])
    code, _, err = cli(fit[:-1] + [str(tmp_path / "run2")], capsys)
    assert code == 2 and one_line(err) and "images/embeds holds NaN" in err
    predict = [
        "predict",
        "--run",
        str(run),
        "--cache",
        str(cache),
        "--data",
        str(pairs),
        "--out",
        str(tmp_path / "p.csv"),
    ]
    code, _, err = cli(predict, capsys)
    assert code == 2 and one_line(err) and "images/embeds holds NaN" in err


def test_verify_of_a_truncated_cache_does_not_advise_the_repair_that_cannot_mend_it(tmp_path, capsys):
    path = write_cache(tmp_path / "c.h5")
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    code, _, err = cli(["cache", "verify", str(path)], capsys)
    assert code == 2 and one_line(err) and "--repair" not in err
    assert "cannot be repaired" in err and "delete it and its .parts folder and re-embed" in err
    code, _, repair_err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 2 and "cannot be repaired" in repair_err


def test_repair_in_a_read_only_folder_gives_verifys_own_advice(tmp_path, capsys, monkeypatch):
    path = write_cache(tmp_path / "ro" / "c.h5")
    poke(path, "images/embeds", [5], np.inf)
    lock_path(path).unlink(missing_ok=True)
    raise_read_only(monkeypatch, path.parent)
    code, _, err = cli(["cache", "verify", "--repair", str(path)], capsys)
    assert code == 2 and one_line(err) and "read-only" in err
    assert "--out" not in err and "copy the cache to a writable folder" in err
