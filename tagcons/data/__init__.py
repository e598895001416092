"""Pairs tables, safe image loading and splits."""

from tagcons.data.pairs import PairColumns, PairTable, load_pairs, normalise_text

__all__ = ["PairColumns", "PairTable", "load_pairs", "normalise_text"]
