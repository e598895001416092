"""Comparing computed numbers with a tolerance: two computations of one float may differ in the last digit.

A float read back from predictions.csv, or summed in another order, is not bit-identical to the one that
was written; tests compare such numbers with `assert_same_numbers`, never byte for byte. Exact equality
stays for what is exact by contract: counts, labels, hashes, bytes a file must hold.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

REL = 1e-9
ABS = 1e-12


def assert_same_numbers(got, want, rel: float = REL, abs_tol: float = ABS, where: str = "") -> None:
    """Nested dicts and lists equal in shape and non-float values, floats within the tolerance."""
    if isinstance(want, dict):
        _same_dict(got, want, rel, abs_tol, where)
    elif isinstance(want, list | tuple):
        _same_sequence(got, want, rel, abs_tol, where)
    elif _is_float(want) or _is_float(got):
        assert _close(got, want, rel, abs_tol), f"{where or 'value'}: {got!r} != {want!r} (rel {rel}, abs {abs_tol})"
    else:
        assert got == want, f"{where or 'value'}: {got!r} != {want!r}"


def _same_dict(got, want: dict, rel: float, abs_tol: float, where: str) -> None:
    assert isinstance(got, dict) and set(got) == set(want), f"{where or 'dict'}: keys {sorted(got)} != {sorted(want)}"
    for key in want:
        assert_same_numbers(got[key], want[key], rel, abs_tol, f"{where}.{key}" if where else str(key))


def _same_sequence(got, want, rel: float, abs_tol: float, where: str) -> None:
    assert len(got) == len(want), f"{where or 'sequence'}: length {len(got)} != {len(want)}"
    for index, (a, b) in enumerate(zip(got, want)):
        assert_same_numbers(a, b, rel, abs_tol, f"{where}[{index}]")


def _is_float(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, Integral | bool)


def _close(got, want, rel: float, abs_tol: float) -> bool:
    if not (_is_float(got) or isinstance(got, Integral)) or not (_is_float(want) or isinstance(want, Integral)):
        return False
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_tol)
