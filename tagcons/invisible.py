"""Invisible characters in text: zero-width characters and bidirectional controls.

Two hashtags that differ only by such a character look the same on screen but are different keys, so
they are embedded, counted and scored apart. tagcons keeps them as the distinct keys they are (a
zero-width joiner can be meaningful, e.g. inside an emoji sequence) and says so: `invisible_variants`
finds the groups of keys that become equal once these characters are removed, and `shown` writes a key
with each invisible character spelled out (``#cat<U+200B>``) for a message.

Ground floor: imports nothing from tagcons; any table of texts (pairs, posts) can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

INVISIBLE_CHARACTERS = {
    "\u200b": "ZERO WIDTH SPACE",
    "\u200c": "ZERO WIDTH NON-JOINER",
    "\u200d": "ZERO WIDTH JOINER",
    "\u2060": "WORD JOINER",
    "\ufeff": "ZERO WIDTH NO-BREAK SPACE",
    "\u00ad": "SOFT HYPHEN",
    "\u180e": "MONGOLIAN VOWEL SEPARATOR",
    "\u200e": "LEFT-TO-RIGHT MARK",
    "\u200f": "RIGHT-TO-LEFT MARK",
    "\u061c": "ARABIC LETTER MARK",
    "\u202a": "LEFT-TO-RIGHT EMBEDDING",
    "\u202b": "RIGHT-TO-LEFT EMBEDDING",
    "\u202c": "POP DIRECTIONAL FORMATTING",
    "\u202d": "LEFT-TO-RIGHT OVERRIDE",
    "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u2067": "RIGHT-TO-LEFT ISOLATE",
    "\u2068": "FIRST STRONG ISOLATE",
    "\u2069": "POP DIRECTIONAL ISOLATE",
}
# One character class of them all, for Python's re and for Arrow's (RE2) regular expressions alike.
INVISIBLE_PATTERN = "[" + "".join(INVISIBLE_CHARACTERS) + "]"
_INVISIBLE = re.compile(INVISIBLE_PATTERN)
_REMOVE = str.maketrans(dict.fromkeys(INVISIBLE_CHARACTERS))


def has_invisible(text: str) -> bool:
    return _INVISIBLE.search(text) is not None


def without_invisible(text: str) -> str:
    """The text with every invisible character removed."""
    return text.translate(_REMOVE)


def shown(text: str) -> str:
    """The text with each invisible character written as <U+XXXX>, so a message shows where it is."""
    return _INVISIBLE.sub(lambda found: f"<U+{ord(found.group()):04X}>", text)


def invisible_variants(keys: Iterable[str]) -> list[tuple[str, ...]]:
    """Groups of two or more distinct keys that are equal once their invisible characters are removed,
    in the order each group's first key comes; each group's keys in their order in ``keys``."""
    groups: dict[str, dict[str, None]] = {}
    for key in keys:
        groups.setdefault(without_invisible(key), {})[key] = None
    return [tuple(group) for group in groups.values() if len(group) > 1]


def names_in(text: str) -> list[str]:
    """The names of the invisible characters in a text, each once, in order (e.g. ['ZERO WIDTH SPACE'])."""
    return list(dict.fromkeys(INVISIBLE_CHARACTERS[c] for c in _INVISIBLE.findall(text)))
