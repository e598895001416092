"""`tagcons` entry point: import every command group's module (which registers its commands on the group),
then run the group, turning exceptions into exit codes and one-line messages."""

from __future__ import annotations

import os
import sys
import traceback

import click

# Each import registers its module's commands on the group; this order keeps cli.commands as cli.py had it.
# isort: off
from tagcons.cli import embed, cache, heads, audit, evaluate, finetune, demo, posts  # noqa: F401

# isort: on
from tagcons.cli.common import cli
from tagcons.errors import BadInputError, StrictFailure, WriteFailedError

EXIT_BAD_INPUT, EXIT_STRICT, EXIT_UNEXPECTED = 2, 3, 1


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: exceptions become exit codes and one-line messages."""
    try:
        cli.main(args=argv, prog_name="tagcons", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tagcons: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except StrictFailure as e:
        click.echo(f"tagcons: {e}", err=True)
        sys.exit(EXIT_STRICT)
    except BadInputError as e:
        click.echo(f"tagcons: error: {e}", err=True)
        if isinstance(e, WriteFailedError):  # HDF5 can crash tearing down a file whose write failed
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("tagcons: interrupted; what was committed is kept, rerun to continue", err=True)
        sys.exit(130)
    except Exception:  # the last resort: an unexpected error is a bug, so show the traceback for a report
        traceback.print_exc()
        click.echo("tagcons: unexpected error (a bug); please report it with the traceback above", err=True)
        sys.exit(EXIT_UNEXPECTED)
