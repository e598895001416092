"""`predict` streams the pairs table: chunks of any size give the same output (CSV and parquet), the input's
other columns travel with their rows, a name clash keeps the input's column under a suffix, pairs left out
are counted across chunks, and messages name the file's own lines."""

import logging

import numpy as np
import pandas as pd
import pytest
from numbers_helpers import assert_same_numbers
from test_heads_support import planted, write_cache

from tagcons.configs import PairColumns
from tagcons.data.pair_chunks import read_pair_chunks
from tagcons.data.pairs import load_pairs
from tagcons.errors import BadInputError
from tagcons.heads import FitHeadConfig, PredictConfig, fit_head, predict
from tagcons.table_out import with_carried

OUTPUT = ["image", "text", "true", "pred", "expected", "p1", "p2", "p3", "p4", "p5"]
CARRIED = ["post_id", "note", "pred_input", "pred_input_input"]  # the input's 'pred' and 'pred_input' both clash


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A logreg run and a pairs file with other columns: ids that look like numbers, a 'pred' column, a note
    holding a line break; the first six pairs (cat_000.png's) are not in the cache."""
    root = tmp_path_factory.mktemp("predict_stream")
    data = planted(n_images=12, per_image=6, dim=8, seed=7)
    n = len(data.images)
    frame = pd.DataFrame(
        {
            "post_id": [f"{i:03d}" for i in range(n)],
            "Image Filename": data.images,
            "note": ["two\nlines" if i == 9 else ("" if i % 5 == 0 else f"note {i}") for i in range(n)],
            "Hashtag": data.texts,
            "pred": [f"theirs {i}" for i in range(n)],
            "pred_input": np.arange(n) * 10,
            "Score": data.labels,
        }
    )
    pairs = root / "pairs.csv"
    frame.to_csv(pairs, index=False)
    frame.to_parquet(root / "pairs.parquet", index=False)
    cache = write_cache(data, root / "c.h5", skip_images=["cat_000.png"])
    config = FitHeadConfig(data=pairs, cache=cache, out=root / "run", head="logreg", columns=PairColumns())
    config.head_params = {"Cs": (1.0,), "threads": 1}
    return {"root": root, "pairs": pairs, "cache": cache, "run": fit_head(config).run_dir, "frame": frame}


def _predict(run, out, data=None, **options):
    return predict(PredictConfig(run=run["run"], cache=run["cache"], data=data or run["pairs"], out=out, **options))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_smaller_than_the_input_write_the_same_bytes_as_one_chunk(run, tmp_path, suffix):
    whole = _predict(run, tmp_path / f"whole{suffix}")
    for rows in (1, 6, 7):  # 6: the first chunk holds only pairs without embeddings; 1: one-row products
        chunked = _predict(run, tmp_path / f"by{rows}{suffix}", chunk_rows=rows)
        assert chunked.out.read_bytes() == whole.out.read_bytes()
        assert (chunked.n_scored, chunked.n_missing) == (whole.n_scored, whole.n_missing) == (66, 6)
        assert_same_numbers(chunked.metrics, whole.metrics)
        assert chunked.n_trained_on == whole.n_trained_on > 0


def test_the_inputs_other_columns_follow_the_outputs_in_their_order_and_a_clash_is_kept_with_a_suffix(
    run, tmp_path, caplog
):
    with caplog.at_level(logging.WARNING):
        result = _predict(run, tmp_path / "p.csv", chunk_rows=5)
    written = pd.read_csv(result.out, dtype={"post_id": str}, keep_default_na=False)
    assert list(written.columns) == OUTPUT + CARRIED
    expected = run["frame"].iloc[6:].reset_index(drop=True)  # the pairs with embeddings, in the file's order
    assert list(written["image"]) == list(expected["Image Filename"])
    assert list(written["post_id"]) == list(expected["post_id"])  # '006' stays '006'
    assert list(written["note"]) == list(expected["note"])  # the line break and the empty cells too
    assert list(written["pred_input"]) == list(expected["pred"])
    assert list(written["pred_input_input"]) == list(expected["pred_input"])
    assert set(written["pred"]) <= {1, 2, 3, 4, 5}  # the head's score keeps its name
    assert result.renamed == {"pred": "pred_input", "pred_input": "pred_input_input"}
    assert caplog.text.count("is also an output column of predict") == 2  # said once, not once per chunk
    assert "column 'pred' is also an output column of predict; carried as 'pred_input'" in caplog.text


def test_parquet_out_holds_the_csvs_values_and_a_parquet_input_keeps_its_types(run, tmp_path):
    csv = pd.read_csv(_predict(run, tmp_path / "p.csv").out, dtype={"post_id": str})
    parquet = pd.read_parquet(_predict(run, tmp_path / "p.parquet", chunk_rows=4).out)
    assert list(parquet.columns) == list(csv.columns)
    numbers = ["true", "pred", "expected", "p1", "p2", "p3", "p4", "p5"]
    np.testing.assert_allclose(parquet[numbers].to_numpy(float), csv[numbers].to_numpy(float), rtol=1e-12)
    for name in ("image", "text", "post_id", "pred_input"):
        assert list(parquet[name]) == list(csv[name])
    from_parquet = pd.read_parquet(_predict(run, tmp_path / "q.parquet", data=run["root"] / "pairs.parquet").out)
    assert from_parquet["pred_input_input"].dtype.kind == "i"  # CSV columns arrive as text, parquet's as typed
    assert list(from_parquet["pred_input_input"]) == list(run["frame"]["pred_input"].iloc[6:])


def test_pairs_left_out_are_counted_over_every_chunk_and_reported_once(run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = _predict(run, tmp_path / "p.csv", chunk_rows=2)
    assert result.n_missing == 6 and result.n_scored == len(pd.read_csv(result.out)) == 66
    assert caplog.text.count("have no embedding and are left out") == 1
    assert "6 of 72 pairs have no embedding and are left out: 1 images not in the cache (e.g. 'cat_000.png')" in (
        caplog.text
    )


def test_failed_images_are_counted_over_chunks_with_their_reason_and_no_embed_advice(run, tmp_path, caplog):
    data = planted(n_images=12, per_image=6, dim=8, seed=7)
    failed = write_cache(data, tmp_path / "failed.h5", failed_images=["cat_000.png", "cat_003.png"])
    with caplog.at_level(logging.WARNING):
        result = predict(
            PredictConfig(run=run["run"], cache=failed, data=run["pairs"], out=tmp_path / "p.csv", chunk_rows=4)
        )
    assert result.n_missing == 12 and result.n_scored == 60
    assert "12 of 72 pairs have no embedding and are left out: 2 images that failed to embed ('cat_000.png': " in (
        caplog.text
    )
    assert "tagcons embed" not in caplog.text


def test_no_pair_with_embeddings_in_any_chunk_refuses_and_writes_nothing(run, tmp_path):
    pairs = tmp_path / "absent.csv"
    run["frame"].iloc[:6].to_csv(pairs, index=False)  # only cat_000.png's pairs
    with pytest.raises(BadInputError, match=r"none of the 6 pairs has embeddings in the cache"):
        _predict(run, tmp_path / "p.parquet", data=pairs, chunk_rows=4)
    assert list(tmp_path.iterdir()) == [pairs]  # no output, no staged leftover


def test_a_bad_cell_in_a_later_chunk_names_its_line_in_the_file(run, tmp_path):
    frame = run["frame"].copy()
    frame.loc[20, "Hashtag"] = " "
    pairs = tmp_path / "bad.csv"
    frame.to_csv(pairs, index=False)
    # header on line 1, pair i on line i + 2, one more from the quoted line break in row 9
    with pytest.raises(BadInputError, match=r"empty cell in column 'Hashtag' at lines 23; fill or delete"):
        _predict(run, tmp_path / "p.csv", data=pairs, chunk_rows=8)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.parquet"])
def test_chunks_hold_the_pairs_one_load_of_the_file_holds(run, name):
    path = run["root"] / name
    whole = load_pairs(path, PairColumns(), require_labels=False).frame
    chunks = [chunk.table.frame for chunk in read_pair_chunks(path, PairColumns(), chunk_rows=5)]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_chunked_reading_gives_every_row_once_with_its_lines(run):
    chunks = list(read_pair_chunks(run["pairs"], PairColumns(), chunk_rows=7))
    assert [len(chunk) for chunk in chunks] == [7] * 10 + [2]
    lines = np.concatenate([chunk.table.frame["line"].to_numpy() for chunk in chunks])
    assert list(lines[:12]) == [*range(2, 12), 13, 14]  # row 9's note spans two lines
    assert list(chunks[0].carried.columns) == ["post_id", "note", "pred", "pred_input"]


def test_a_carried_column_clashing_twice_gets_the_suffix_twice():
    out = pd.DataFrame({"image": ["a"], "pred": [1]})
    carried = pd.DataFrame({"pred": ["x"], "pred_input": ["y"], "image": ["z"], "other": [0]})
    frame, renamed = with_carried(out, carried)
    assert list(frame.columns) == ["image", "pred", "pred_input", "pred_input_input", "image_input", "other"]
    assert list(frame.iloc[0]) == ["a", 1, "x", "y", "z", 0]
    assert renamed == {"pred": "pred_input", "pred_input": "pred_input_input", "image": "image_input"}


def test_the_cli_takes_chunk_rows_and_writes_parquet_by_the_suffix(run, tmp_path, capsys):
    from test_cli import run_cli

    args = ["-q", "predict", "--run", run["run"], "--cache", run["cache"], "--data", run["pairs"]]
    code, out, _ = run_cli([*args, "--out", tmp_path / "p.parquet", "--chunk-rows", 5], capsys)
    assert code == 0 and "66 pairs scored, 6 missing from the cache" in out
    assert list(pd.read_parquet(tmp_path / "p.parquet").columns) == OUTPUT + CARRIED
    code, _, err = run_cli([*args, "--out", tmp_path / "q.csv", "--chunk-rows", 0], capsys)
    assert code == 2 and "--chunk-rows" in err and not (tmp_path / "q.csv").exists()
