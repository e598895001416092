"""The pairs table: load a CSV/TSV/parquet of (image, text, label), validate it, normalise it.

Every later stage works on a `PairTable` whose frame has the columns `image`, `text`, `label`
(int8 on the table's score scale, 1-5 by default, or -1 when the file has no labels) and `line` (the
physical line a row starts on in the file, for messages: a quoted cell spanning lines counts every
line). Validation failures raise `BadInputError` naming the file, the first offending lines and the
fix; nothing is written here.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tagcons.configs import PairColumns
from tagcons.data.tables import MAX_LINES_IN_MESSAGE, read_header, read_table, row_lines
from tagcons.data.tables import Where as _Where
from tagcons.errors import BadInputError
from tagcons.invisible import INVISIBLE_PATTERN, has_invisible, invisible_variants, names_in, shown, without_invisible
from tagcons.labels import (
    AUTO,
    DEFAULT_SCALE,
    MAX_SCORE,
    NO_LABEL,
    ScoreScale,
    absent_scores,
    infer_scale,
    parse_scale,
)

log = logging.getLogger(__name__)

LABEL_SPAN = 128  # labels are int8: -1 (none) .. 126


@dataclass
class PairTable:
    """A validated, normalised pairs table."""

    frame: pd.DataFrame
    source: str
    has_labels: bool = True
    scale: ScoreScale = DEFAULT_SCALE

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def images(self) -> np.ndarray:
        return self.frame["image"].to_numpy()

    @property
    def texts(self) -> np.ndarray:
        return self.frame["text"].to_numpy()

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    def unique_images(self) -> list[str]:
        return list(pd.unique(self.frame["image"]))

    def unique_texts(self) -> list[str]:
        return list(pd.unique(self.frame["text"]))

    def subset(self, index: np.ndarray) -> PairTable:
        return PairTable(self.frame.iloc[index].reset_index(drop=True), self.source, self.has_labels, self.scale)


def normalise_text(text: str, strip_hash: bool = False) -> str:
    """NFC, trimmed; a leading '#' removed only when asked (the same hashtag must be one key)."""
    text = unicodedata.normalize("NFC", str(text)).strip()
    if strip_hash:
        text = text.lstrip("#").strip()
    return text


def normalise_image_key(key: str) -> str:
    """Image keys are relative paths: NFC (macOS writes NFD names), forward slashes, trimmed."""
    return unicodedata.normalize("NFC", str(key)).strip().replace("\\", "/")


def _normalise_texts(values: pa.Array, strip_hash: bool) -> pa.Array:
    """normalise_text over a whole column, in Arrow (no Python object per row)."""
    values = pc.utf8_trim_whitespace(pc.utf8_normalize(values, "NFC"))
    return pc.utf8_trim_whitespace(pc.utf8_ltrim(values, "#")) if strip_hash else values


def _normalise_image_keys(values: pa.Array) -> pa.Array:
    return pc.replace_substring(pc.utf8_trim_whitespace(pc.utf8_normalize(values, "NFC")), "\\", "/")


def load_pairs(
    path: str | Path,
    columns: PairColumns = PairColumns(),
    strip_hash: bool = False,
    require_labels: bool = True,
    scale: ScoreScale | str | None = None,
) -> PairTable:
    """Read, validate and normalise a pairs file. Raises BadInputError on any problem.

    Labels must lie on ``scale`` (a `ScoreScale`, 'LOW-HIGH', or 'auto' for the labels' own range;
    None: the study's 1-5).

    Columns stay Arrow strings end to end, so a 10-million-row table loads without a Python
    object per cell.
    """
    path = Path(path)
    raw = _read_table(path, columns)
    check_columns(raw, path, columns, require_labels)
    table = pairs_from_raw(raw, _Where(path, row_lines(raw, path)), columns, strip_hash, parse_scale(scale))
    report_duplicates(table)
    report_invisible_variants(table)
    return table


def pairs_from_raw(
    raw: pa.Table, where: _Where, columns: PairColumns, strip_hash: bool = False, scale=DEFAULT_SCALE
) -> PairTable:
    """The checked, normalised pairs of rows read from ``where.path`` (its columns already checked)."""
    has_labels = columns.label in raw.column_names
    images = _required_strings(raw, columns.image, where)
    _check_no_nul(images, columns.image, where)
    frame = pd.DataFrame(
        {
            "image": _as_series(_normalise_image_keys(images)),
            "text": _as_series(_normalise_texts(_required_strings(raw, columns.text, where), strip_hash)),
            "label": (
                _labels(raw, columns.label, where, scale) if has_labels else np.full(raw.num_rows, NO_LABEL, np.int8)
            ),
            "line": where.lines,
        }
    )
    _check_not_blank_after_normalising(frame, where, columns)
    if scale == AUTO:
        scale = _auto_scale(frame["label"].to_numpy(), where) if has_labels else DEFAULT_SCALE
    return PairTable(frame, str(where.path), has_labels, scale)


def _auto_scale(labels: np.ndarray, where: _Where) -> ScoreScale:
    scale = infer_scale(labels)
    _warn_absent_scores(labels, scale, where)
    return scale


def _warn_absent_scores(labels: np.ndarray, scale: ScoreScale, where: _Where) -> None:
    """--scale auto spans the labels' range; a score of it that no row holds often means a typo at one end."""
    absent = absent_scores(scale, labels)
    if not absent:
        return
    beyond_gap = [end for end, inner in ((scale.low, scale.low + 1), (scale.high, scale.high - 1)) if inner in absent]
    rare = [end for end in beyond_gap if np.sum(labels == end) <= MAX_LINES_IN_MESSAGE]
    where_rare = "; ".join(f"score {end} is on {where.describe(labels == end)}" for end in rare)
    log.warning(
        "%s: --scale auto made the scale %s from the labels, but no row holds score%s %s%s; if a score is a typo, "
        "fix it, or name the scale with --scale LOW-HIGH",
        where.path,
        scale,
        "s" if len(absent) > 1 else "",
        ", ".join(str(s) for s in absent),
        f" ({where_rare})" if where_rare else "",
    )


def report_invisible_variants(table: PairTable) -> int:
    """Warn when hashtags differ only by invisible characters (zero-width, bidi controls); return how many do.

    They stay the distinct keys they are; Arrow finds the hashtags holding such characters, so only those
    (and the hashtags they would equal without them) become Python strings."""
    texts = pc.unique(pa.array(table.frame["text"].array))
    marked = pc.filter(texts, pc.match_substring_regex(texts, INVISIBLE_PATTERN)).to_pylist()
    if not marked:
        return 0
    plain = pc.filter(texts, pc.is_in(texts, pa.array([without_invisible(t) for t in marked], pa.string())))
    groups = invisible_variants(marked + plain.to_pylist())
    if groups:
        example = sorted(groups[0], key=has_invisible)  # the plain hashtag first, if there is one
        log.warning(
            "%s: %d hashtags differ from another only by invisible characters (%s), e.g. %s; they stay distinct "
            "hashtags, embedded and scored apart: remove the characters in the table if they are the same tag",
            table.source,
            sum(len(g) for g in groups),
            ", ".join(dict.fromkeys(name for g in groups for key in g for name in names_in(key))),
            " and ".join(f"'{shown(key)}'" for key in example[:2]),
        )
    return sum(len(g) for g in groups)


def _as_series(values: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowExtensionArray(values))


def _read_table(path: Path, columns: PairColumns) -> pa.Table:
    return read_table(path, (columns.image, columns.text, columns.label))


# The published version of the study (study-v2's dataset.csv) names its columns so; post_id is the image file.
STUDY_V2_COLUMNS = PairColumns(image="post_id", text="hashtag", label="label")


def resolve_columns(path: str | Path, columns: PairColumns) -> PairColumns:
    """The columns to read ``path`` by: ``columns``, except that with the default names a file holding none of
    them but the published study's (`post_id`, `hashtag`, `label`) is read by those (logged)."""
    default, published = PairColumns(), STUDY_V2_COLUMNS
    if columns != default:
        return columns
    names = set(read_header(path))
    if names & {default.image, default.text} or not {published.image, published.text, published.label} <= names:
        return columns
    log.info("%s: the published study's columns (post_id, hashtag, label) read as image, hashtag and score", path)
    return published


def check_columns(raw: pa.Table, path: Path, columns: PairColumns, require_labels: bool) -> None:
    wanted = {"--image-col": columns.image, "--text-col": columns.text}
    if require_labels:
        wanted["--label-col"] = columns.label
    missing = [(flag, name) for flag, name in wanted.items() if name not in raw.column_names]
    if missing:
        names = ", ".join(f"'{name}' ({flag})" for flag, name in missing)
        raise BadInputError(
            f"{path}: missing column {names}; the file has {raw.column_names}; "
            f"name the right columns with {' / '.join(flag for flag, _ in missing)}"
        )


def _text_column(raw: pa.Table, column: str, where: _Where) -> pa.Array:
    values = raw.column(column).combine_chunks()
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
        raise BadInputError(
            f"{where.path}: column '{column}' holds {values.type} values, not single values; "
            "store one text or number per cell"
        ) from e


def _blank(values: pa.Array) -> np.ndarray:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")).fill_null(True).to_numpy(zero_copy_only=False)


def _required_strings(raw: pa.Table, column: str, where: _Where) -> pa.Array:
    values = _text_column(raw, column, where)
    empty = _blank(values)
    if empty.any():
        raise BadInputError(
            f"{where.path}: empty cell in column '{column}' at {where.describe(empty)}; fill or delete those rows"
        )
    return values


def _check_no_nul(values: pa.Array, column: str, where: _Where) -> None:
    """A NUL byte cannot be part of a file name on any system (and breaks path functions)."""
    has_nul = pc.match_substring(values, "\x00").fill_null(False).to_numpy(zero_copy_only=False)
    if has_nul.any():
        raise BadInputError(
            f"{where.path}: image path in column '{column}' contains a NUL byte at {where.describe(has_nul)}; "
            "fix those paths"
        )


def _labels(raw: pa.Table, column: str, where: _Where, scale: ScoreScale | str) -> np.ndarray:
    text = _text_column(raw, column, where)
    path = where.path
    on_scale = "" if scale == AUTO else f" {scale}"
    missing = _blank(text)
    if missing.any():
        raise BadInputError(
            f"{path}: empty label in column '{column}' at {where.describe(missing)}; every pair needs a score{on_scale}"
        )
    numbers = _to_float(pc.utf8_trim_whitespace(text))
    not_integer = np.isnan(numbers) | (numbers != np.round(numbers))
    if not_integer.any():
        raise BadInputError(
            f"{path}: label in column '{column}' is not an integer at {where.describe(not_integer)}; "
            f"scores must be whole numbers{on_scale}"
        )
    if scale == AUTO:
        return _auto_range_labels(numbers, column, where)
    out_of_range = scale.outside(numbers)
    if out_of_range.any():
        raise BadInputError(
            f"{path}: label in column '{column}' outside {scale} at {where.describe(out_of_range)}; "
            f"scores must be {', '.join(map(str, scale.labels))}, "
            "or give your own scale with --scale LOW-HIGH (or --scale auto)"
        )
    return numbers.astype(np.int8)


def _auto_range_labels(numbers: np.ndarray, column: str, where: _Where) -> np.ndarray:
    outside = (numbers < 0) | (numbers > MAX_SCORE)
    if outside.any():
        raise BadInputError(
            f"{where.path}: label in column '{column}' outside 0-{MAX_SCORE} at {where.describe(outside)}; "
            f"--scale auto takes scores from 0 to {MAX_SCORE}"
        )
    return numbers.astype(np.int8)


def _to_float(text: pa.Array) -> np.ndarray:
    """Numbers from text; what is not a number becomes NaN (Arrow's fast cast, pandas only on failure)."""
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return pd.to_numeric(_as_series(text), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _check_not_blank_after_normalising(frame: pd.DataFrame, where: _Where, columns: PairColumns) -> None:
    blank = (frame["text"] == "").to_numpy(dtype=bool, na_value=True)
    if blank.any():
        raise BadInputError(
            f"{where.path}: hashtag in column '{columns.text}' is empty after normalising at {where.describe(blank)} "
            "(a lone '#' with --strip-hash?); fix or delete those rows"
        )


def check_image_paths(table: PairTable, root: str | Path) -> None:
    """Every image key names a file inside the images folder ``root``; a key that cannot (absolute, a Windows
    drive or UNC path, '..' leaving the folder) stops with the table and its lines, like any bad cell."""
    from tagcons.data.images import BadImagePathError, check_image_keys  # Pillow, only for commands that read images

    try:
        check_image_keys(root, table.unique_images())
    except BadImagePathError as e:
        where = _Where(Path(table.source), table.frame["line"].to_numpy())
        bad = (table.frame["image"] == e.key).to_numpy(dtype=bool, na_value=False)
        raise BadInputError(f"{table.source}: {e.problem} at {where.describe(bad)}; {e.fix}") from e


def report_duplicates(table: PairTable) -> tuple[int, int]:
    """Log exact duplicate pairs (count) and warn about conflicting labels; return (duplicates, conflicts)."""
    pair_codes = _pair_codes(table.frame)
    labelled = pair_codes * LABEL_SPAN + table.labels.astype(np.int64) + 1  # label -1..126 -> 0..127
    unique_labelled, first_rows = np.unique(labelled, return_index=True)
    duplicate_rows = len(labelled) - len(unique_labelled)
    if duplicate_rows:
        log.info("%s: %d duplicate pair rows (same image, hashtag and score)", table.source, duplicate_rows)
    if not table.has_labels:
        return duplicate_rows, 0
    pairs_of_unique, labels_per_pair = np.unique(unique_labelled // LABEL_SPAN, return_counts=True)
    conflicts = int((labels_per_pair > 1).sum())
    if conflicts:
        example = first_rows[np.isin(unique_labelled // LABEL_SPAN, pairs_of_unique[labels_per_pair > 1])][0]
        log.warning(
            "%s: %d pairs appear with different scores (e.g. image '%s', hashtag '%s'); they are kept as separate rows",
            table.source,
            conflicts,
            table.frame["image"].iloc[example],
            table.frame["text"].iloc[example],
        )
    return duplicate_rows, conflicts


def _pair_codes(frame: pd.DataFrame) -> np.ndarray:
    """One int64 per row that is equal exactly when (image, text) is equal."""
    image_codes, _ = pd.factorize(frame["image"])
    text_codes, texts = pd.factorize(frame["text"])
    return image_codes.astype(np.int64) * len(texts) + text_codes
