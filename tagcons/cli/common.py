"""The `tagcons` click group and what its commands share: logging set-up, column and head options,
option callbacks, the one-line run headline and the progress-bar rule (the cli package's lowest module)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from tagcons import __version__
from tagcons.configs import (
    PairColumns,
)
from tagcons.errors import BadInputError
from tagcons.heads.registry import closest_name, head_names
from tagcons.labels import parse_scale

log = logging.getLogger("tagcons")
ALL_HEADS = "all"
BACKBONE_HELP = (
    "A registry alias (docs/backbones.md: Backbones and pairs files), hf:ORG/NAME[@REVISION], local:DIR, or a bare "
    "hub id or folder "
    "(a bare name that is both an alias and a folder is refused as ambiguous)."
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, never to a stream that was replaced (and
    perhaps closed) after the command configured logging: a later in-process call logs to the live one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter(
            "tagcons: %(message)s" if verbosity <= 0 else "%(asctime)s %(name)s %(levelname)s: %(message)s"
        )
    )
    root = logging.getLogger("tagcons")
    root.handlers[:] = [handler]
    root.setLevel(level)
    _quiet_third_party()


def _quiet_third_party() -> None:
    """transformers' own progress bars and advice would drown ours; set through the environment, which
    transformers reads when (and only if) a command imports it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:  # already imported (the library used in-process): set it directly
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


class HeadChoice(click.Choice):
    """--head choices from the registry; a mistyped name gets the closest one suggested."""

    def convert(self, value, param, ctx):
        choices = ", ".join(self.choices)
        if isinstance(value, str) and value in head_names() and value not in self.choices:
            self.fail(
                f"head '{value}' has no probabilities, which this command needs; choose from {choices}", param, ctx
            )
        if isinstance(value, str) and value not in self.choices and (close := closest_name(value, self.choices)):
            self.fail(f"'{value}' is not a head; did you mean '{close}'? (choose from {choices})", param, ctx)
        return super().convert(value, param, ctx)


IMAGE_COL_HELP = "Column with the image path, relative to --images."
CACHED_IMAGE_COL_HELP = "Column with the image path, as embed stored it in the cache."


def cached_pair_columns(command):
    """The pair columns of a command without --images (its image paths are the cache's keys)."""
    return pair_columns(command, CACHED_IMAGE_COL_HELP)


def pair_columns(command, image_help: str = IMAGE_COL_HELP):
    """--image-col / --text-col / --label-col on every command that reads pairs (defaults: `PairColumns`)."""
    study = PairColumns()
    command = click.option("--label-col", default=study.label, show_default=True, help="Column with the score.")(
        command
    )
    command = click.option("--text-col", default=study.text, show_default=True, help="Column with the hashtag.")(
        command
    )
    command = click.option(
        "--image-col",
        default=study.image,
        show_default=True,
        help=image_help,
    )(command)
    return command


def _columns(image_col: str, text_col: str, label_col: str) -> PairColumns:
    return PairColumns(image=image_col, text=text_col, label=label_col)


def _scale(_ctx, _param, value: str) -> str:
    """Check --scale early (a usage error, exit 2); the library resolves 'auto' from the labels."""
    try:
        parse_scale(value)
    except BadInputError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _head_params(_ctx, _param, values):
    """--param key=value pairs as text; fit-head parses each by its head's setting type."""
    params = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}': use KEY=VALUE, e.g. --param max_epochs=40")
        params[key.strip().replace("-", "_")] = raw.strip()
    return params


def _headline(run_dir: Path, metrics: dict) -> str:
    keys = ("accuracy", "macro_f1", "qwk", "mae")
    intervals = metrics.get("ci95") or {}
    values = ", ".join(
        f"{k} {metrics[k]:.3f}{_interval(intervals.get(k))}" for k in keys if isinstance(metrics.get(k), (int, float))
    )
    images = f", {metrics['n_test_images']} images" if "n_test_images" in metrics else ""
    return f"{run_dir}: {values} (n_test {metrics.get('n_test', '?')}{images})"


def _interval(bounds) -> str:
    return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""


def _progress() -> bool:
    """Progress bars when --progress, else when stderr is a terminal (a log file gets no bar frames) and not --quiet."""
    if click.get_current_context().find_root().params.get("progress"):
        return True
    return sys.stderr.isatty() and logging.getLogger("tagcons").level <= logging.INFO


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tagcons")
@click.option("-v", "--verbose", count=True, help="More detail (-v debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("--progress", is_flag=True, help="Progress bars even when stderr is not a terminal.")
def cli(verbose: int, quiet: bool, progress: bool) -> None:
    """Score how well a hashtag fits an image (1-5) with CLIP-family models: embed once, fit many."""
    _configure_logging(-1 if quiet else verbose)
