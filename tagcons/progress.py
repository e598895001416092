"""A progress bar over a stream of chunks, counted in the chunks' rows (tqdm imported only when shown)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator


def chunk_progress(
    chunks: Iterable, enabled: bool, desc: str, unit: str, size: Callable[[object], int] = len
) -> Iterator:
    """Yield ``chunks`` unchanged; with ``enabled`` a bar advances by ``size(chunk)`` after each."""
    if not enabled:
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(unit=unit, desc=desc) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(size(chunk))
