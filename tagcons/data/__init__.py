"""Pairs tables, safe image loading, splits and the demo set."""

from tagcons.data.pairs import LABELS, NO_LABEL, PairColumns, PairTable, load_pairs, normalise_text

__all__ = ["LABELS", "NO_LABEL", "PairColumns", "PairTable", "load_pairs", "normalise_text"]
