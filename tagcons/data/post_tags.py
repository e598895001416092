"""Hashtags of one post: extracted from a caption as Instagram tokenises them, or read from a tag list.

A tag is `#` followed by letters, digits, `_` and the combining marks that scripts such as Hangul
jamo, Devanagari or Thai need inside a word; anything else (emoji, punctuation, white space, another
`#`) ends it; an extracted tag keeps its `#`, as a pairs file writes it. Tags are then normalised
exactly as a pairs file's hashtags (`tagcons.data.pairs.normalise_text`: NFC, trimmed, the leading `#`
removed only for a cache embedded with `--strip-hash`), so they are the keys that cache holds.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tagcons.data.pairs import normalise_text
from tagcons.errors import BadInputError
from tagcons.invisible import INVISIBLE_PATTERN  # characters that draw nothing: tags differing by them look equal

# \w covers letters, digits and `_` of every script; the ranges add the marks that \w leaves out
# (combining diacritics; the Indic, Thai and Lao blocks, whose vowel signs are marks; ZWNJ/ZWJ inside a word).
_TAG_CHAR = (
    r"[\w\u0300-\u036f\u0900-\u0dff\u0e00-\u0eff\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u200c\u200d]"
)
TAG_PATTERN = re.compile(rf"#({_TAG_CHAR}+)")
LIST_SEPARATORS = re.compile(r"[\s,]+")
INSTAGRAM_TAG_LIMIT = 30


def extract_hashtags(caption) -> list[str]:
    """The hashtags of a caption, in order, without `#` (duplicates kept: `PostTags` counts them)."""
    if caption is None or (isinstance(caption, float) and caption != caption):
        return []
    return [m.group(0) for m in TAG_PATTERN.finditer(unicodedata.normalize("NFC", str(caption)))]


def parse_tag_list(cell) -> list[str]:
    """A tag list cell: a list (parquet, JSON Lines), a JSON list in a string, or tags split on white space/commas."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return []
    if isinstance(cell, str):
        return _parse_string_list(cell)
    if isinstance(cell, Iterable):
        items = list(cell)
        return items if all(type(item) is str for item in items) else [_tag_string(item) for item in items]
    raise ValueError(f"a tag list must be a list or a string, got {type(cell).__name__}")


def _parse_string_list(cell: str) -> list[str]:
    text = cell.strip()
    if not text.startswith(("[", "{")):  # a JSON object is not a tag list either
        return [tag for tag in LIST_SEPARATORS.split(text) if tag]
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a JSON list ({error.msg} at character {error.pos})") from None
    if not isinstance(values, list):
        raise ValueError("not a JSON list")
    return [_tag_string(item) for item in values]


def _tag_string(item) -> str:
    if not isinstance(item, str):
        raise ValueError(f"a tag must be a string, got {json.dumps(item) if _jsonable(item) else type(item).__name__}")
    return item


def _jsonable(item) -> bool:
    return isinstance(item, int | float | bool | list | dict) or item is None


def normalise_tag(tag: str, strip_hash: bool = False) -> str:
    """A pairs file's hashtag normalisation (NFC, trimmed, `#` off with ``strip_hash``); "" for a tag of only `#`."""
    text = normalise_text(tag, strip_hash)
    return text if text.lstrip("#").strip() else ""


@dataclass
class CleanTags:
    """The unique tags of many posts, flattened in post order, and what was dropped or noticed per post."""

    owner: np.ndarray  # post (0-based in the chunk) of each tag
    tags: np.ndarray  # normalised tags, first occurrence within a post kept
    position: np.ndarray  # order of each tag within its post
    n_tags: np.ndarray  # per post
    n_duplicates: np.ndarray  # per post: repeated tags dropped
    n_invisible: np.ndarray  # per post: tags holding a character that draws nothing (zero-width, bidi control)


def clean_tags(raw: list[list[str]], strip_hash: bool = False) -> CleanTags:
    """Every post's tags normalised as `normalise_tag` does, in Arrow (no Python work per tag); empty tags
    dropped, repeats within a post dropped (the first kept); invisible characters counted and kept."""
    n_posts = len(raw)
    lengths = np.fromiter(map(len, raw), np.int64, n_posts)
    owner = np.repeat(np.arange(n_posts), lengths)
    flat = pc.utf8_trim_whitespace(pc.utf8_normalize(pa.array(list(chain.from_iterable(raw)), pa.string()), "NFC"))
    core = pc.utf8_trim_whitespace(pc.utf8_ltrim(flat, "#"))
    present = pc.utf8_length(core).to_numpy(zero_copy_only=False) > 0  # a tag of only '#' is no tag
    keys = core if strip_hash else flat  # as a pairs file's hashtags are keyed (data.pairs.normalise_text)
    frame = pd.DataFrame({"owner": owner, "tag": keys.to_numpy(zero_copy_only=False)})[present]
    repeated = frame.duplicated(["owner", "tag"]).to_numpy()
    kept = frame[~repeated]
    owner, tags = kept["owner"].to_numpy(), kept["tag"].to_numpy(dtype=object)
    invisible = pc.match_substring_regex(pa.array(tags, pa.string()), INVISIBLE_PATTERN).to_numpy(zero_copy_only=False)
    n_tags = np.bincount(owner, minlength=n_posts)
    starts = np.cumsum(n_tags) - n_tags
    return CleanTags(
        owner=owner,
        tags=tags,
        position=np.arange(len(owner)) - np.repeat(starts, n_tags),
        n_tags=n_tags,
        n_duplicates=np.bincount(frame["owner"].to_numpy()[repeated], minlength=n_posts),
        n_invisible=np.bincount(owner[invisible.astype(bool)], minlength=n_posts),
    )


def bad_tag_list(path, row: int, column: str, reason: str) -> BadInputError:
    return BadInputError(
        f"{path}: row {row}: column {column!r} is not a tag list ({reason}); give a JSON list of strings "
        "or tags separated by spaces or commas, or name a caption column with --caption-col"
    )
