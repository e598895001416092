"""Typed head settings for `--param KEY=VALUE`: each value is parsed by its setting's type.

A head declares the types its ``__init__`` defaults cannot tell in ``PARAM_TYPES`` (a setting whose
default is None, a list, or a fixed set of choices); every other setting takes the type of its
default (int, float, bool, str). So a new setting needs nothing here, only its type declared on the
head when its default does not show it (``class_weight``, which every weighting head has, is typed once in
``SHARED_TYPES``).

Every number setting also has a range (``PARAM_RANGES`` on the head; ``seed`` and ``threads`` share
``SHARED_RANGES``): `check_head_params` refuses a value outside it, and nan or infinity anywhere,
before anything is loaded or fitted (a test checks every number setting of every head has one).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

from tagcons.errors import BadInputError

TRUE_WORDS, FALSE_WORDS, NONE_WORDS = ("true", "yes", "1"), ("false", "no", "0"), ("none", "null", "")


class ParamType:
    """A named parser: ``parse(text)`` returns the value or raises ValueError; ``numeric``: it parses numbers."""

    def __init__(self, describe: str, parse: Callable[[str], object], numeric: bool = False):
        self.describe = describe
        self.parse = parse
        self.numeric = numeric

    def __repr__(self) -> str:
        return f"ParamType({self.describe})"


def _boolean(text: str) -> bool:
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise ValueError(text)


def _float_list(text: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if not values:
        raise ValueError(text)
    return values


INT = ParamType("an integer, e.g. 40", int, numeric=True)
FLOAT = ParamType("a number, e.g. 0.1", float, numeric=True)
BOOL = ParamType("true or false", _boolean)
STR = ParamType("a word", str)
FLOATS = ParamType("numbers separated by commas, e.g. 0.1,1", _float_list, numeric=True)


def optional(inner: ParamType) -> ParamType:
    """The inner type, or None for 'none'."""

    def parse(text: str):
        return None if text.lower() in NONE_WORDS else inner.parse(text)

    return ParamType(f"{inner.describe}, or none", parse, inner.numeric)


def choice(*names: str) -> ParamType:
    def parse(text: str) -> str:
        if text not in names:
            raise ValueError(text)
        return text

    return ParamType(f"one of {', '.join(names)}", parse)


class ParamRange:
    """The values a number setting allows: ``describe`` says them (e.g. "in [0, 1)"), ``accepts(value)`` checks
    one finite number (nan and infinity are never accepted)."""

    def __init__(self, describe: str, accepts: Callable[[float], bool]):
        self.describe = describe
        self.accepts = accepts

    def __repr__(self) -> str:
        return f"ParamRange({self.describe})"


def at_least(low: float) -> ParamRange:
    return ParamRange(f">= {low}", lambda value: value >= low)


def positive() -> ParamRange:
    return ParamRange("> 0", lambda value: value > 0)


def between(low: float, high: float, high_open: bool = False, low_open: bool = False) -> ParamRange:
    """[low, high], with either end left out when it is open."""
    describe = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return ParamRange(
        describe,
        lambda value: (value > low if low_open else value >= low) and (value < high if high_open else value <= high),
    )


def either(value: float, other: ParamRange) -> ParamRange:
    """``value`` itself (e.g. -1 for "no limit") or a value in ``other``."""
    return ParamRange(f"{value} or {other.describe}", lambda v: v == value or other.accepts(v))


SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's seeds are unsigned 32-bit integers
SHARED_TYPES = {"class_weight": choice("balanced", "none")}  # a library caller may also pass {score: weight}
SHARED_RANGES = {"seed": between(0, SEED_MAX), "threads": at_least(1)}


_BY_DEFAULT = {bool: BOOL, int: INT, float: FLOAT, str: STR}  # bool first: True is also an int


def param_defaults(head_class: type) -> dict:
    signature = inspect.signature(head_class.__init__)
    return {name: p.default for name, p in signature.parameters.items() if name != "self"}


def param_type(head_class: type, name: str) -> ParamType | None:
    """The declared type of a setting (the head's, else the shared one), else the type of its default; None if
    neither tells."""
    declared = {**SHARED_TYPES, **getattr(head_class, "PARAM_TYPES", {})}
    if name in declared:
        return declared[name]
    default = param_defaults(head_class).get(name)
    return next((kind for cls, kind in _BY_DEFAULT.items() if type(default) is cls), None)


def param_range(head_class: type, name: str) -> ParamRange | None:
    """The range a head declares for a setting (or the shared one for seed and threads); None if neither."""
    return getattr(head_class, "PARAM_RANGES", {}).get(name, SHARED_RANGES.get(name))


def check_head_params(head_class: type, params: dict) -> None:
    """BadInputError naming the first number setting outside its range (or nan, or infinite), with the range."""
    for name, value in params.items():
        kind = param_type(head_class, name)
        if value is not None and kind is not None and kind.numeric and not isinstance(value, bool):
            _check_range(head_class, name, value)


def _check_range(head_class: type, name: str, value) -> None:
    allowed = param_range(head_class, name)
    if allowed is None:  # a programming error: a number setting must declare its range (a test checks)
        raise TypeError(f"head '{head_class.name}' declares no range for its setting {name}")
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(_finite_number(v) and allowed.accepts(v) for v in values):
        shown = ",".join(str(v) for v in values)
        every = " (every value)" if isinstance(value, (tuple, list)) else ""
        raise BadInputError(f"--param {name}={shown}: head '{head_class.name}' takes {name} {allowed.describe}{every}")


def check_seed(seed: int) -> int:
    """The common ``--seed`` of a command (each head's own ``--param seed`` is checked with the settings)."""
    if not SHARED_RANGES["seed"].accepts(seed):
        raise BadInputError(f"--seed {seed}: use an integer {SHARED_RANGES['seed'].describe}")
    return seed


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)


def parse_head_params(head_class: type, raw: dict[str, str]) -> dict:
    """Settings from KEY -> text pairs, each parsed by its type; BadInputError names the bad one."""
    return {name: _parse_one(head_class, name, text) for name, text in raw.items()}


def _parse_one(head_class: type, name: str, text: str):
    defaults = param_defaults(head_class)
    if name not in defaults:
        raise BadInputError(
            f"--param {name}={text}: head '{head_class.name}' has no setting {name}; it has {', '.join(defaults)}"
        )
    kind = param_type(head_class, name)
    if kind is None:  # a programming error: the head must declare the type (a test checks every head)
        raise TypeError(f"head '{head_class.name}' declares no type for its setting {name}")
    try:
        return kind.parse(text.strip())
    except ValueError:
        raise BadInputError(f"--param {name}={text}: head '{head_class.name}' takes {kind.describe}") from None
