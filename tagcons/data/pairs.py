"""The pairs table: load a CSV/TSV/parquet of (image, text, label), validate it, normalise it.

Every later stage works on a `PairTable` whose frame has the columns `image`, `text`, `label`
(int8 1-5, or -1 when the file has no labels) and `line` (the row's line number in the file, for
messages). Validation failures raise `BadInputError` naming the file, the first offending lines
and the fix; nothing is written by this module.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.errors import BadInputError

log = logging.getLogger(__name__)

LABELS = (1, 2, 3, 4, 5)
NO_LABEL = -1
MAX_LINES_IN_MESSAGE = 5


@dataclass(frozen=True)
class PairColumns:
    """Names of the columns in the user's file (the study's by default)."""

    image: str = "Image Filename"
    text: str = "Hashtag"
    label: str = "Score"


@dataclass
class PairTable:
    """A validated, normalised pairs table."""

    frame: pd.DataFrame
    source: str
    has_labels: bool = True

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

    def subset(self, index: np.ndarray) -> "PairTable":
        return PairTable(self.frame.iloc[index].reset_index(drop=True), self.source, self.has_labels)


def normalise_text(text: str, strip_hash: bool = False) -> str:
    """NFC, trimmed; a leading '#' removed only when asked (the same hashtag must be one key)."""
    text = unicodedata.normalize("NFC", str(text)).strip()
    if strip_hash:
        text = text.lstrip("#").strip()
    return text


def normalise_image_key(key: str) -> str:
    """Image keys are relative paths: NFC (macOS writes NFD names), forward slashes, trimmed."""
    return unicodedata.normalize("NFC", str(key)).strip().replace("\\", "/")


def load_pairs(
    path: str | Path,
    columns: PairColumns = PairColumns(),
    strip_hash: bool = False,
    require_labels: bool = True,
) -> PairTable:
    """Read, validate and normalise a pairs file. Raises BadInputError on any problem."""
    path = Path(path)
    raw = _read_table(path)
    _check_columns(raw, path, columns, require_labels)
    has_labels = columns.label in raw.columns
    frame = pd.DataFrame(
        {
            "image": _required_strings(raw, columns.image, path).map(normalise_image_key),
            "text": _required_strings(raw, columns.text, path).map(lambda t: normalise_text(t, strip_hash)),
            "label": _labels(raw, columns.label, path) if has_labels else np.full(len(raw), NO_LABEL, np.int8),
            "line": np.arange(len(raw)) + _first_data_line(path),
        }
    )
    _check_not_blank_after_normalising(frame, path, columns)
    table = PairTable(frame, str(path), has_labels)
    report_duplicates(table)
    return table


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BadInputError(f"{path}: pairs file not found; check the --data path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if suffix in (".tsv", ".tab") else ","
            # utf-8-sig strips the byte-order mark that Excel (and the study's CSV) writes.
            frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig", dtype=str, keep_default_na=False,
                                na_values=[""])
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        raise BadInputError(f"{path}: cannot be read as a pairs table ({e}); save it as UTF-8 CSV, TSV or parquet") from e
    if frame.empty:
        raise BadInputError(f"{path}: the table has no rows; it needs one row per image-hashtag pair")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _first_data_line(path: Path) -> int:
    """Line number of the first data row: 2 for CSV/TSV (after the header); parquet has row numbers."""
    return 0 if path.suffix.lower() == ".parquet" else 2


def _check_columns(raw: pd.DataFrame, path: Path, columns: PairColumns, require_labels: bool) -> None:
    wanted = {"--image-col": columns.image, "--text-col": columns.text}
    if require_labels:
        wanted["--label-col"] = columns.label
    missing = [(flag, name) for flag, name in wanted.items() if name not in raw.columns]
    if missing:
        names = ", ".join(f"'{name}' ({flag})" for flag, name in missing)
        raise BadInputError(
            f"{path}: missing column {names}; the file has {list(raw.columns)}; "
            f"name the right columns with {' / '.join(flag for flag, _ in missing)}"
        )


def _lines(path: Path, mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r + _first_data_line(path)) for r in rows[:MAX_LINES_IN_MESSAGE])
    more = f" and {len(rows) - MAX_LINES_IN_MESSAGE} more" if len(rows) > MAX_LINES_IN_MESSAGE else ""
    what = "rows" if path.suffix.lower() == ".parquet" else "lines"
    return f"{what} {shown}{more}"


def _required_strings(raw: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = raw[column]
    empty = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise BadInputError(f"{path}: empty cell in column '{column}' at {_lines(path, empty)}; fill or delete those rows")
    return values.astype(str)


def _labels(raw: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    text = raw[column].astype(str).str.strip()
    numbers = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=float)
    missing = raw[column].isna().to_numpy() | (text == "").to_numpy()
    if missing.any():
        raise BadInputError(f"{path}: empty label in column '{column}' at {_lines(path, missing)}; every pair needs a score 1-5")
    not_integer = np.isnan(numbers) | (numbers != np.round(numbers))
    if not_integer.any():
        raise BadInputError(
            f"{path}: label in column '{column}' is not an integer at {_lines(path, not_integer)}; scores must be whole numbers 1-5"
        )
    out_of_range = (numbers < LABELS[0]) | (numbers > LABELS[-1])
    if out_of_range.any():
        raise BadInputError(
            f"{path}: label in column '{column}' outside 1-5 at {_lines(path, out_of_range)}; scores must be 1, 2, 3, 4 or 5"
        )
    return numbers.astype(np.int8)


def _check_not_blank_after_normalising(frame: pd.DataFrame, path: Path, columns: PairColumns) -> None:
    blank = (frame["text"] == "").to_numpy()
    if blank.any():
        raise BadInputError(
            f"{path}: hashtag in column '{columns.text}' is empty after normalising at {_lines(path, blank)} "
            "(a lone '#' with --strip-hash?); fix or delete those rows"
        )


def report_duplicates(table: PairTable) -> tuple[int, int]:
    """Log exact duplicate pairs (count) and warn about conflicting labels; return (duplicates, conflicts)."""
    frame = table.frame
    duplicate_rows = int(frame.duplicated(["image", "text", "label"]).sum())
    if duplicate_rows:
        log.info("%s: %d duplicate pair rows (same image, hashtag and score)", table.source, duplicate_rows)
    if not table.has_labels:
        return duplicate_rows, 0
    labels_per_pair = frame.groupby(["image", "text"], sort=False)["label"].nunique()
    conflicts = int((labels_per_pair > 1).sum())
    if conflicts:
        example = labels_per_pair[labels_per_pair > 1].index[0]
        log.warning(
            "%s: %d pairs appear with different scores (e.g. image '%s', hashtag '%s'); they are kept as separate rows",
            table.source, conflicts, example[0], example[1],
        )
    return duplicate_rows, conflicts
