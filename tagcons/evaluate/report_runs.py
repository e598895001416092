"""The report's reading side: run directories as `RunView`s, and the only files of a run it embeds.

A report is shared, so it embeds nothing but a run's own regular PNG files (`run_png`: no symlink
followed, no FIFO waited on, PNG signature checked) and the tables it reads itself.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from tagcons.errors import BadInputError
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, read_json
from tagcons.labels import scale_from_config

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class RunView:
    """One run directory as the report reads it."""

    name: str
    path: Path
    config: dict
    metrics: dict
    predictions: pd.DataFrame

    @cached_property
    def test_hash(self) -> str:
        from tagcons.evaluate.provenance import keys_hash, pair_keys

        recorded = self.metrics.get("test_rows_hash")
        return recorded or keys_hash(pair_keys(self.predictions["image"], self.predictions["text"]))


def load_runs(run_dirs) -> list[RunView]:
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise BadInputError("report needs at least one run directory")
    names = _unique_names(paths)
    return [_load_run(path, name) for path, name in zip(paths, names)]


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _load_run(path: Path, name: str) -> RunView:
    if not path.is_dir():
        raise BadInputError(f"{path}: not a directory; pass run directories written by fit-head or finetune")
    predictions = _read_predictions(path / PREDICTIONS_FILE)
    return RunView(name, path, read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE), predictions)


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BadInputError(f"{path}: not found; is {path.parent} a run directory written by fit-head or finetune?")
    # Hashtags such as 'NA' or 'null' are text, not missing values.
    try:
        frame = pd.read_csv(
            path, dtype={"image": str, "text": str}, keep_default_na=False, na_values={"expected": [""]}
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BadInputError(
            f"{path}: not a UTF-8 CSV table of predictions ({type(e).__name__}); the run directory is damaged, "
            "rerun fit-head or finetune"
        ) from e
    missing = [c for c in ("image", "text", "true", "pred") if c not in frame.columns]
    if missing:
        raise BadInputError(
            f"{path}: column(s) {', '.join(missing)} missing; the report needs a run's test predictions"
        )
    return frame


def run_labels(run: RunView) -> tuple[int, ...]:
    """The run's score scale (config.json's `scale`; the study's 1-5 for runs that predate it)."""
    return scale_from_config(run.config).labels


def rows_note(run: RunView) -> str:
    if run.config.get("cv"):
        return f"{run.config['cv']}-fold out-of-fold"
    return "test part"


def run_png(run_dir: Path, name: str) -> bytes | None:
    """The bytes of the run's figure `name` if it is a regular PNG file inside the run folder; a symlink,
    a non-PNG or anything else is left out with a warning (the page is shared: it must embed nothing else)."""
    payload = run_file(run_dir, name)
    if payload is not None and not payload.startswith(PNG_SIGNATURE):
        log.warning("%s: not a PNG image; left out of the report", run_dir / name)
        return None
    return payload


def run_file(folder: Path, name: str) -> bytes | None:
    """The bytes of ``folder/name`` if it is a regular file (no symlink followed, no FIFO waited on), else
    None, with a warning when something else stands there."""
    path = Path(folder) / name
    try:  # no link followed, no FIFO waited on; fstat then checks what was opened
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb")
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symlink
        log.warning("%s: not a regular file in the run folder (a symlink?); left out of the report", path)
        return None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            log.warning("%s: not a regular file in the run folder; left out of the report", path)
            return None
        return handle.read()


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
