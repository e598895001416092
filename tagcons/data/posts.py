"""Posts files streamed in chunks (CSV, TSV, parquet, JSON Lines), exploded into (post, hashtag) rows.

Nothing reads the whole file: `read_posts` yields `chunk_posts` rows at a time, so memory depends on
the chunk, not on the number of posts. Every column the user had is carried: the pairs frame keeps all
but the hashtag source column (a caption repeated per tag would multiply the output); the posts frame
keeps all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import PostColumns
from tagcons.data.pairs import normalise_image_key
from tagcons.data.post_tags import INSTAGRAM_TAG_LIMIT, bad_tag_list, clean_tags, extract_hashtags, parse_tag_list
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)

ROW = "_row"  # 1-based data row of each post in its file, for messages
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet"}
JSON_LINES = (".jsonl", ".ndjson", ".json")


@dataclass
class PostChunk:
    """Raw rows of a posts file and which column holds their hashtags."""

    frame: pd.DataFrame  # the user's columns, strings for CSV/TSV, plus ROW
    tag_column: str
    from_caption: bool


@dataclass
class ExplodeStats:
    """What was dropped or noticed while turning posts into (post, hashtag) rows; added up over chunks."""

    n_posts: int = 0
    n_pairs: int = 0
    n_without_tags: int = 0
    n_over_limit: int = 0
    n_duplicates: int = 0
    n_invisible: int = 0
    examples: dict = field(default_factory=dict)  # what -> first row it happened on

    def add(self, other: ExplodeStats) -> None:
        for name in ("n_posts", "n_pairs", "n_without_tags", "n_over_limit", "n_duplicates", "n_invisible"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for what, row in other.examples.items():
            self.examples.setdefault(what, row)

    def warn(self, path) -> None:
        """One line for each thing that happened at all, naming the first row it happened on."""
        for line in self.warnings(path):
            log.warning(line)

    def warnings(self, path) -> list[str]:
        said = [
            (self.n_without_tags, "posts have no hashtags (kept in the posts table with n_tags 0)", "none"),
            (self.n_over_limit, f"posts have more than {INSTAGRAM_TAG_LIMIT} hashtags (Instagram's limit; all "
             "kept)", "many"),
            (self.n_duplicates, "repeated hashtags within a post were dropped (the first kept)", "duplicate"),
            (self.n_invisible, "hashtags hold invisible characters (zero-width or bidi control) that can make two "
             "tags look equal; they are kept as distinct keys", "invisible"),
        ]  # fmt: skip
        return [f"{path}: {n} {text} (first: row {self.examples[what]})" for n, text, what in said if n]


def read_posts(path: str | Path, columns: PostColumns = PostColumns(), chunk_posts: int = 20000) -> Iterator[PostChunk]:
    """The posts file `chunk_posts` rows at a time; raises BadInputError for a missing column or file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such posts file; give a CSV, TSV, parquet or JSON Lines file with --posts")
    first_row = 1
    for frame in _frames(path, chunk_posts):
        yield posts_chunk(frame, columns, path, first_row)
        first_row += len(frame)


def posts_chunk(frame: pd.DataFrame, columns: PostColumns = PostColumns(), source="posts", first_row: int = 1):
    """A DataFrame of posts as a chunk (its rows numbered from `first_row` for messages)."""
    frame = frame.reset_index(drop=True)
    tag_column, from_caption = _tag_source(frame, source, columns)
    return PostChunk(frame.assign(**{ROW: np.arange(first_row, first_row + len(frame))}), tag_column, from_caption)


def _frames(path: Path, chunk_posts: int) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix in JSON_LINES:
        yield from _json_lines(path, chunk_posts)
    elif SUFFIXES.get(suffix) == "parquet":
        yield from _parquet(path, chunk_posts)
    else:
        yield from _delimited(path, chunk_posts, "\t" if SUFFIXES.get(suffix) == "tsv" else ",")


def _parquet(path: Path, chunk_posts: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_posts):
        yield batch.to_pandas()


def _delimited(path: Path, chunk_posts: int, delimiter: str) -> Iterator[pd.DataFrame]:
    """Every column read as text (a post id stays '007'), `chunk_posts` rows at a time."""
    try:
        reader = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, chunksize=chunk_posts)
        yield from (frame.replace({"": None}) for frame in reader)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BadInputError(
            f"{path}: cannot be read as a {'TSV' if delimiter == chr(9) else 'CSV'} file ({error})"
        ) from None


def _json_lines(path: Path, chunk_posts: int) -> Iterator[pd.DataFrame]:
    try:
        with pd.read_json(path, lines=True, dtype=False, chunksize=chunk_posts) as reader:
            yield from reader
    except ValueError as error:
        raise BadInputError(f"{path}: cannot be read as JSON Lines ({str(error).splitlines()[0]})") from None


def _tag_source(frame: pd.DataFrame, path, columns: PostColumns) -> tuple[str, bool]:
    for name in (columns.post_id, columns.image):
        if name not in frame.columns:
            raise BadInputError(
                _missing_column(path, name, frame, "--post-col" if name == columns.post_id else "--image-col")
            )
    if columns.hashtags in frame.columns:
        return columns.hashtags, False
    if columns.caption in frame.columns:
        return columns.caption, True
    raise BadInputError(
        f"{path}: has neither a hashtags column {columns.hashtags!r} nor a caption column {columns.caption!r} "
        f"(columns: {', '.join(map(str, frame.columns))}); name one with --hashtags-col or --caption-col"
    )


def _missing_column(path, name: str, frame: pd.DataFrame, option: str) -> str:
    return f"{path}: no column {name!r} (columns: {', '.join(map(str, frame.columns))}); name it with {option}"


@dataclass
class Exploded:
    """One chunk as (post, hashtag) rows plus its posts, keyed for the cache."""

    pairs: pd.DataFrame  # carried columns + hashtag, position, post (index into posts)
    posts: pd.DataFrame  # every user column + n_tags
    image_keys: np.ndarray  # normalised image key of each post
    stats: ExplodeStats
    tag_column: str = ""  # the posts' column the hashtags came from


def explode_posts(chunk: PostChunk, columns: PostColumns, path, strip_hash: bool = False) -> Exploded:
    """(post, hashtag) rows of a chunk: tags normalised (keyed with `#` unless ``strip_hash``, as the cache
    keys its hashtags) and de-duplicated within each post."""
    frame = chunk.frame
    raw = [_raw_tags(cell, chunk, row, path) for cell, row in zip(frame[chunk.tag_column], frame[ROW])]
    clean = clean_tags(raw, strip_hash)
    carried = frame.drop(columns=[chunk.tag_column, ROW]).iloc[clean.owner].reset_index(drop=True)
    carried["hashtag"] = clean.tags
    carried["position"] = clean.position
    carried["post"] = clean.owner
    posts = frame.drop(columns=[ROW]).assign(n_tags=clean.n_tags)
    images = np.array([_image_key(value, row, columns, path) for value, row in zip(frame[columns.image], frame[ROW])])
    stats = _stats(clean, frame[ROW].to_numpy())
    return Exploded(carried, posts, images.astype(object), stats, chunk.tag_column)


def _raw_tags(cell, chunk: PostChunk, row, path) -> list[str]:
    try:
        return extract_hashtags(cell) if chunk.from_caption else parse_tag_list(cell)
    except ValueError as error:
        raise bad_tag_list(path, int(row), chunk.tag_column, str(error)) from None


def _stats(clean, rows: np.ndarray) -> ExplodeStats:
    stats = ExplodeStats(n_posts=len(rows), n_pairs=len(clean.tags))
    for what, per_post in (
        ("none", clean.n_tags == 0),
        ("many", clean.n_tags > INSTAGRAM_TAG_LIMIT),
        ("duplicate", clean.n_duplicates),
        ("invisible", clean.n_invisible),
    ):
        happened = np.flatnonzero(per_post)
        if len(happened):
            stats.examples[what] = int(rows[happened[0]])
    stats.n_without_tags = int((clean.n_tags == 0).sum())
    stats.n_over_limit = int((clean.n_tags > INSTAGRAM_TAG_LIMIT).sum())
    stats.n_duplicates, stats.n_invisible = int(clean.n_duplicates.sum()), int(clean.n_invisible.sum())
    return stats


def _image_key(value, row, columns: PostColumns, path) -> str:
    if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
        raise BadInputError(
            f"{path}: row {int(row)}: column {columns.image!r} is empty; every post needs its image file name"
        )
    return normalise_image_key(value)


@dataclass
class PostKeys:
    """The unique images and hashtags of a posts file, in first-seen order (what `embed --posts` encodes)."""

    images: list[str]
    texts: list[str]
    stats: ExplodeStats

    def unique_images(self) -> list[str]:
        return self.images

    def unique_texts(self) -> list[str]:
        return self.texts


def read_post_keys(
    path, columns: PostColumns = PostColumns(), chunk_posts: int = 20000, strip_hash: bool = False
) -> PostKeys:
    """Stream the posts file once, keeping only its unique keys (the posts themselves are not held)."""
    images: dict[str, None] = {}
    texts: dict[str, None] = {}
    stats = ExplodeStats()
    for chunk in read_posts(path, columns, chunk_posts):
        exploded = explode_posts(chunk, columns, path, strip_hash)
        images.update(dict.fromkeys(exploded.image_keys))
        texts.update(dict.fromkeys(exploded.pairs["hashtag"]))
        stats.add(exploded.stats)
    stats.warn(path)
    return PostKeys(list(images), list(texts), stats)
