"""The `tagcons` command line: parse flags into a config dataclass, call the library, report.

This is the only package that configures logging, prints, and turns exceptions into exit codes:
0 ok, 2 bad input or usage (one line, no traceback), 3 `--strict` failures, 1 unexpected error.

common.py holds the click group and what the commands share; one module per command group (embed, cache,
heads, audit, evaluate, finetune, demo, posts) registers its commands; entry.py's main imports them all and
maps exceptions to exit codes.
"""

from tagcons.cli.common import cli
from tagcons.cli.entry import main

__all__ = ["cli", "main"]
