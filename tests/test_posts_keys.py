"""The posts' key lookup: every value's cache row or -1, whatever the hashes do."""

import numpy as np
import pytest

from tagcons.posts import keys as keys_module
from tagcons.posts.keys import KeyIndex


def by_dict(keys, values):
    rows = {key: row for row, key in enumerate(keys)}
    return np.array([rows.get(value, -1) for value in values], dtype=np.int64)


def first_letter_hash(values):
    return np.array([ord(value[0]) for value in values], dtype=np.uint64)


def test_each_value_gets_its_keys_row_and_missing_values_minus_one():
    keys = [f"img_{i:05d}.jpg" for i in range(3000)] + ["#서울", "e\u0301", "é"]
    rng = np.random.default_rng(0)
    values = [keys[i] for i in rng.integers(0, len(keys), 500)] + ["nope.jpg", "", "#서울 ", "img_03000.jpg"]
    rng.shuffle(values)
    np.testing.assert_array_equal(KeyIndex(keys).positions(values), by_dict(keys, values))


def test_a_value_sharing_a_keys_hash_but_not_its_text_is_missing(monkeypatch):
    monkeypatch.setattr(keys_module, "_hashes", first_letter_hash)
    index = KeyIndex(["apple", "banana", "cherry"])
    assert not index.collides
    np.testing.assert_array_equal(index.positions(["avocado", "banana", "cherry", "date"]), [-1, 1, 2, -1])


def test_keys_whose_hashes_collide_are_still_told_apart(monkeypatch):
    monkeypatch.setattr(keys_module, "_hashes", first_letter_hash)
    keys = ["apple", "avocado", "banana"]
    index = KeyIndex(keys)
    assert index.collides
    values = ["avocado", "apple", "apricot", "banana"]
    np.testing.assert_array_equal(index.positions(values), by_dict(keys, values))


@pytest.mark.parametrize(("keys", "values"), [([], ["a", "b"]), (["a"], []), ([], [])])
def test_no_keys_or_no_values(keys, values):
    assert KeyIndex(keys).positions(values).tolist() == by_dict(keys, values).tolist()
