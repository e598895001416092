"""The tolerance helper itself: it must fail where numbers really differ, or the tests using it cannot."""

import pytest
from numbers_helpers import assert_same_numbers


def test_floats_that_differ_in_the_last_digit_are_the_same_number():
    assert_same_numbers({"ci": [0.6639435970337929, 1.0]}, {"ci": [0.663943597033793, 1.0]})
    assert_same_numbers({"x": float("nan")}, {"x": float("nan")})


@pytest.mark.parametrize(
    ("got", "want"),
    [
        ({"ci": [0.66, 1.0]}, {"ci": [0.67, 1.0]}),  # a real difference
        ({"ci": [0.66]}, {"ci": [0.66, 1.0]}),  # another shape
        ({"a": 1.0}, {"b": 1.0}),  # other keys
        ({"label": 3}, {"label": 4}),  # non-floats exactly
        ({"x": float("nan")}, {"x": 0.0}),
        ({"x": None}, {"x": 0.5}),
    ],
)
def test_real_differences_fail(got, want):
    with pytest.raises(AssertionError):
        assert_same_numbers(got, want)
