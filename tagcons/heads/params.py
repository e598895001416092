"""Typed head settings for `--param KEY=VALUE`: each value is parsed by its setting's type.

A head declares the types its ``__init__`` defaults cannot tell in ``PARAM_TYPES`` (a setting whose
default is None, a list, or a fixed set of choices); every other setting takes the type of its
default (int, float, bool, str). So a new setting needs nothing here, only its type declared on the
head when its default does not show it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tagcons.errors import BadInputError

TRUE_WORDS, FALSE_WORDS, NONE_WORDS = ("true", "yes", "1"), ("false", "no", "0"), ("none", "null", "")


class ParamType:
    """A named parser: ``parse(text)`` returns the value or raises ValueError."""

    def __init__(self, describe: str, parse: Callable[[str], object]):
        self.describe = describe
        self.parse = parse

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


INT = ParamType("an integer, e.g. 40", int)
FLOAT = ParamType("a number, e.g. 0.1", float)
BOOL = ParamType("true or false", _boolean)
STR = ParamType("a word", str)
FLOATS = ParamType("numbers separated by commas, e.g. 0.1,1", _float_list)


def optional(inner: ParamType) -> ParamType:
    """The inner type, or None for 'none'."""

    def parse(text: str):
        return None if text.lower() in NONE_WORDS else inner.parse(text)

    return ParamType(f"{inner.describe}, or none", parse)


def choice(*names: str) -> ParamType:
    def parse(text: str) -> str:
        if text not in names:
            raise ValueError(text)
        return text

    return ParamType(f"one of {', '.join(names)}", parse)


def bounded(inner: ParamType, low=None, high=None, low_open: bool = False) -> ParamType:
    """The inner type, within [low, high] (``low_open``: above low, not at it); ValueError outside."""

    def parse(text: str):
        value = inner.parse(text)
        if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
            raise ValueError(text)
        return value

    above = f"above {low}" if low_open else f"at least {low}"
    limits = " and ".join(part for part in (low is not None and above, high is not None and f"at most {high}") if part)
    return ParamType(f"{inner.describe}, {limits}", parse)


_BY_DEFAULT = {bool: BOOL, int: INT, float: FLOAT, str: STR}  # bool first: True is also an int


def param_defaults(head_class: type) -> dict:
    signature = inspect.signature(head_class.__init__)
    return {name: p.default for name, p in signature.parameters.items() if name != "self"}


def param_type(head_class: type, name: str) -> ParamType | None:
    """The declared type of a setting, else the type of its default; None if neither tells."""
    declared = getattr(head_class, "PARAM_TYPES", {})
    if name in declared:
        return declared[name]
    default = param_defaults(head_class).get(name)
    return next((kind for cls, kind in _BY_DEFAULT.items() if type(default) is cls), None)


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
