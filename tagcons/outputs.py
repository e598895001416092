"""The one rule for every command that writes an output: an existing output is refused unless
`--overwrite` is given, and the refusal names `--overwrite` (and the other way out, another `--out`).

A file output (predict's CSV, report's page, compare's tables) exists when the file does; a folder
output (a fit-head run, an audit) exists when it holds any of the files the command writes there, so a
new or empty folder is always accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tagcons.errors import BadInputError

OVERWRITE_ADVICE = "pass --overwrite to replace it, or choose another --out"


def refuse_existing_file(path: Path, overwrite: bool) -> None:
    """BadInputError when the file ``path`` exists and ``overwrite`` is false."""
    if not overwrite and Path(path).is_file():
        raise BadInputError(f"{path}: already exists; {OVERWRITE_ADVICE}")


def refuse_existing_files(paths: Iterable[Path], overwrite: bool) -> None:
    """The same for an output written as several files (the first existing one is named)."""
    for path in paths:
        refuse_existing_file(path, overwrite)


def refuse_filled_folder(folder: Path, names: Iterable[str], overwrite: bool, holds: str = "an output") -> None:
    """BadInputError when ``folder`` already holds any of the files ``names`` and ``overwrite`` is false."""
    if overwrite or not Path(folder).is_dir():
        return
    if any((Path(folder) / name).exists() for name in names):
        raise BadInputError(f"{folder}: already holds {holds}; {OVERWRITE_ADVICE}")
