"""`predict`: score a pairs file with a saved fit-head run (the `tagcons predict` command; module `scoring`
so the function `tagcons.heads.predict` and a module of the same name never shadow each other).

The cache must carry the fingerprint the run was trained on (other features would give silent
nonsense). Pairs without embeddings are left out and named, with the `tagcons embed` command that
adds them. The output CSV has image, text, [true], pred, expected (sum of k * p_k), p1..p5: the
probabilities after the run's temperature, and pred under the run's decoding (argmax or expected).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.cache.schema import describe_settings_difference, recorded_settings
from tagcons.configs import PredictConfig
from tagcons.data.pair_chunks import PairChunk, read_pair_chunks
from tagcons.data.pairs import PairColumns
from tagcons.errors import BadInputError, FingerprintMismatchError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.provenance import read_side_keys, table_keys, trained_keys
from tagcons.evaluate.rundir import CONFIG_FILE, predictions_frame, read_json
from tagcons.heads.base import HEAD_FILE, load_head
from tagcons.heads.features import FEATURE_KINDS
from tagcons.heads.join import MissingPairs, cache_strip_hash, join_pairs, open_cache, report_missing_rows
from tagcons.labels import scale_from_config
from tagcons.outputs import refuse_existing_file
from tagcons.progress import chunk_progress
from tagcons.table_out import table_writer, with_carried

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    out: Path
    n_scored: int
    n_missing: int
    metrics: dict | None  # when the pairs file has labels
    n_trained_on: int = 0  # scored pairs that were in the head's fit or validation part
    renamed: dict = field(default_factory=dict)  # carried input column -> its name in the output (a clash)


def predict(config: PredictConfig) -> PredictResult:
    """Stream the pairs file through the run's head: `chunk_rows` pairs read, joined, scored and written at a
    time (parquet row groups for a .parquet --out, else CSV), so memory does not grow with the file."""
    run_dir = Path(config.run)
    check_output(Path(config.out), config.overwrite)
    run_config = read_json(run_dir / CONFIG_FILE)
    head = load_head(run_dir)
    columns = config.columns or PairColumns(**run_config.get("columns", {}))
    with open_cache(config.cache) as cache:
        check_fingerprint(cache, run_config, config.cache, run_dir)
        # The fingerprint matched, so the cache's --strip-hash is the one the run was fitted with.
        strip_hash = cache_strip_hash(cache) if config.strip_hash is None else config.strip_hash
        scorer = ChunkScorer(head, cache, scale_from_config(run_config), run_config, run_dir)
        chunks = read_pair_chunks(config.data, columns, strip_hash, scorer.scale, config.chunk_rows)
        with table_writer(config.out) as writer:
            for chunk in chunk_progress(chunks, config.progress, "predict", " pairs"):
                writer.write(scorer.score(chunk))
            report_missing_rows(
                scorer.missing, scorer.n_rows, str(config.data), _embed_hint(config, run_config, strip_hash)
            )
    return scorer.result(Path(config.out))


def _embed_hint(config: PredictConfig, run_config: dict, strip_hash: bool) -> str:
    return f"; add them with: {embed_command(config, run_config, strip_hash)}"


class ChunkScorer:
    """Scores chunks of a pairs table with a saved head, adding up what the result reports: the pairs left
    out, the labelled pairs' true, predicted and expected scores (for the metrics: 10 bytes a labelled pair,
    the only thing kept per row) and the scored pairs that trained the head."""

    def __init__(self, head, cache, scale, run_config: dict, run_dir: Path):
        self.head, self.cache, self.scale, self.run_dir = head, cache, scale, run_dir
        self.kind = run_feature_kind(run_config, run_dir)
        self.missing = MissingPairs()
        self.trained = TrainedOverlap(run_dir)
        self.n_rows = 0
        self.renamed: dict = {}
        self._labelled: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def score(self, chunk: PairChunk) -> pd.DataFrame:
        """The chunk's scored pairs (those with embeddings), its carried columns beside them."""
        joined = join_pairs(self.cache, chunk.table, self.kind)
        check_input_width(self.head, joined.features.shape[1], self.run_dir)
        self.missing.add(joined)
        self.n_rows += len(chunk)
        present = np.flatnonzero(joined.present)
        table = chunk.table.subset(present)
        pred, proba = self._predict(joined.features, table)
        frame = predictions_frame(table, pred, proba, table.labels if table.has_labels else None, self.scale.labels)
        if table.has_labels:
            self._labelled.append((table.labels.astype(np.int8), pred.astype(np.int8), frame["expected"].to_numpy()))
        self.trained.add(table)
        frame, renamed = with_carried(frame, chunk.carried.iloc[present])
        self._note_renamed(renamed, chunk.table.source)
        return frame

    def _predict(self, features, table) -> tuple[np.ndarray, np.ndarray]:
        """Scores and calibrated probabilities under the run's decoding (none for a chunk without a pair)."""
        if not len(table):
            return np.empty(0, np.int64), np.empty((0, len(self.scale.labels)))
        X = features if getattr(self.head, "NEEDS_FEATURES", True) else table  # baselines read the pairs themselves
        return self.head.predict_scores(X, self.scale.labels)

    def _note_renamed(self, renamed: dict, source: str) -> None:
        for name, new in renamed.items():
            if name not in self.renamed:
                log.warning("%s: column '%s' is also an output column of predict; carried as '%s'", source, name, new)
        self.renamed.update(renamed)

    def metrics(self) -> dict | None:
        if not self._labelled:
            return None
        y_true, pred, expected = (np.concatenate(parts) for parts in zip(*self._labelled))
        return compute_metrics(y_true, pred, labels=self.scale.labels, expected=expected)

    def result(self, out: Path) -> PredictResult:
        n_trained_on = self.trained.report(self.missing.n_present)
        return PredictResult(
            out, self.missing.n_present, self.missing.n_missing, self.metrics(), n_trained_on, self.renamed
        )


def check_output(out: Path, overwrite: bool) -> None:
    """A predictions file, not a folder; an existing one only with --overwrite."""
    if out.is_dir():
        raise BadInputError(
            f"{out}: is a folder; pass the predictions CSV to write as --out (e.g. {out / 'scored.csv'})"
        )
    refuse_existing_file(out, overwrite)


class TrainedOverlap:
    """Which scored pairs trained the head (its part_keys.json), gathered chunk by chunk: at most the
    head's own trained keys are held."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        sides = read_side_keys(run_dir)
        self._trained = None if sides is None else trained_keys(sides)
        self._seen: set[str] = set()

    def add(self, table) -> None:
        if self._trained:
            self._seen.update(key for key in table_keys(table) if key in self._trained)

    def report(self, n_scored: int) -> int:
        """How many scored pairs trained the head (each pair once); warns when any did."""
        n = len(self._seen)
        if n:
            log.warning(
                "%d of the %d scored pairs trained this head (run %s): scores on them are memorised, not "
                "predicted; metrics on this file are not a test",
                n,
                n_scored,
                self.run_dir,
            )
        return n


def run_feature_kind(run_config: dict, run_dir: Path) -> str:
    kind = run_config.get("features", "concat")
    if kind not in FEATURE_KINDS:
        raise BadInputError(
            f"{run_dir / CONFIG_FILE}: features {kind!r} is not one of {', '.join(FEATURE_KINDS)}; "
            "the run directory was edited or damaged, refit it"
        )
    return kind


def check_input_width(head, width: int, run_dir: Path) -> None:
    """The features config.json names must have the width the saved head was fitted on."""
    expected = head.input_width()
    if expected is not None and expected != width:
        raise BadInputError(
            f"{run_dir / CONFIG_FILE}: its features give {width} columns but the head in {run_dir / HEAD_FILE} "
            f"was fitted on {expected}; the run directory was edited or damaged, refit it"
        )


def check_fingerprint(cache, run_config: dict, cache_path, run_dir: Path) -> None:
    """The cache must hold the features the run was trained on; the refusal names the settings that differ."""
    expected = run_config.get("cache_fingerprint")
    if cache.fingerprint != expected:
        raise FingerprintMismatchError(
            f"{cache_path}: embedded with other settings than the cache run {run_dir} was trained on "
            f"({_difference(cache, run_config)}); embed the pairs with the run's settings into another cache, "
            f"or fit a head on this one"
        )


def _difference(cache, run_config: dict) -> str:
    recorded = run_config.get("cache_settings")
    fingerprints = f"fingerprint {run_config.get('cache_fingerprint')} vs {cache.fingerprint}"
    if not recorded:  # a run written before runs recorded their cache's settings
        return f"{fingerprints}; the run does not record its cache's settings: backbone {run_config.get('backbone')}"
    named = describe_settings_difference(recorded, recorded_settings(cache.attrs))
    return f"run's vs this cache's: {named}" if named else f"{fingerprints}: a setting the run does not record"


def embed_command(config: PredictConfig, run_config: dict, strip_hash: bool) -> str:
    parts = [
        "tagcons",
        "embed",
        "--data",
        str(config.data),
        "--images",
        str(config.images or "IMAGES_DIR"),
        "--backbone",
        str(run_config.get("backbone") or run_config.get("model_id")),
        "--out",
        str(config.cache),
    ]
    if strip_hash:
        parts.append("--strip-hash")
    return shlex.join(parts)
