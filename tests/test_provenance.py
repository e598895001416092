"""Row provenance: order-free part hashes, saved keys and overlap counts."""

import pytest

from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import (
    keys_hash,
    overlap_count,
    pair_keys,
    read_side_keys,
    side_hashes,
    trained_keys,
    write_side_keys,
)


def test_hash_ignores_order_and_repeats_but_not_content():
    keys = pair_keys(["a.png", "b.png"], ["x", "y"])
    assert keys_hash(keys) == keys_hash(list(reversed(keys)) + [keys[0]])
    assert keys_hash(keys) != keys_hash(pair_keys(["a.png", "b.png"], ["x", "z"]))
    assert side_hashes({"fit": keys})["validation"] is None


def test_saved_keys_round_trip_and_count_overlap(tmp_path):
    fit, test = pair_keys(["a", "b"], ["x", "y"]), pair_keys(["b", "c"], ["y", "z"])
    write_side_keys(tmp_path, {"fit": fit, "validation": None, "test": test})
    parts = read_side_keys(tmp_path)
    assert parts["fit"] == set(fit) and parts["validation"] is None
    assert overlap_count(trained_keys(parts), test) == 1


def test_missing_file_means_unknown_and_damaged_file_is_refused(tmp_path):
    assert read_side_keys(tmp_path) is None
    (tmp_path / "part_keys.json").write_text("[1, 2]")
    with pytest.raises(BadInputError, match="part keys"):
        read_side_keys(tmp_path)
