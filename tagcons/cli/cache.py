"""`tagcons cache merge` and `tagcons cache verify`: maintain cache files."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    _progress,
    cli,
)
from tagcons.errors import BadInputError


@cli.group()
def cache() -> None:
    """Maintain cache files."""


@cache.command("merge")
@click.argument("cache_path", metavar="CACHE.h5", type=click.Path(path_type=Path))
def cache_merge(cache_path):
    """Consolidate the part files that sharded or interrupted runs left beside CACHE.h5."""
    from tagcons.cache import merge_parts

    merge_parts(cache_path, progress=_progress())
    click.echo(f"{cache_path}: merged")


@cache.command("verify")
@click.argument("cache_path", metavar="CACHE.h5", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True, help="Drop damaged rows and part files; the next embed re-embeds them.")
def cache_verify(cache_path, repair):
    """Check CACHE.h5 and its part files (layout, checksums, finite values); exit 2 if anything is wrong."""
    from tagcons.cache.verify import repair_cache, repair_summary, unchecked_note, verify_cache

    report = verify_cache(cache_path)
    for problem in report.problems:
        click.echo(problem)
    if report.ok:
        click.echo(f"{cache_path}: ok ({len(report.files)} file(s) checked{unchecked_note(report, repair)})")
        if not repair:
            return
    elif not repair:
        raise BadInputError(f"{cache_path}: {len(report.problems)} problem(s) found; {report.advice()}")
    click.echo(f"{cache_path}: {repair_summary(repair_cache(cache_path, report))}")
