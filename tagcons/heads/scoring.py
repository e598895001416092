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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagcons.cache.schema import describe_settings_difference, recorded_settings
from tagcons.configs import PredictConfig
from tagcons.data.pairs import PairColumns, load_pairs
from tagcons.errors import BadInputError, FingerprintMismatchError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.provenance import overlap_count, read_side_keys, table_keys, trained_keys
from tagcons.evaluate.rundir import CONFIG_FILE, predictions_frame, read_json, write_text_staged
from tagcons.heads.base import HEAD_FILE, load_head
from tagcons.heads.features import FEATURE_KINDS
from tagcons.heads.join import cache_strip_hash, join_pairs, open_cache, report_missing
from tagcons.labels import scale_from_config
from tagcons.outputs import refuse_existing_file

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    out: Path
    n_scored: int
    n_missing: int
    metrics: dict | None  # when the pairs file has labels
    n_trained_on: int = 0  # scored pairs that were in the head's fit or validation part


def predict(config: PredictConfig) -> PredictResult:
    run_dir = Path(config.run)
    check_output(Path(config.out), config.overwrite)
    run_config = read_json(run_dir / CONFIG_FILE)
    head = load_head(run_dir)
    columns = config.columns or PairColumns(**run_config.get("columns", {}))
    with open_cache(config.cache) as cache:
        check_fingerprint(cache, run_config, config.cache, run_dir)
        # The fingerprint matched, so the cache's --strip-hash is the one the run was fitted with.
        strip_hash = cache_strip_hash(cache) if config.strip_hash is None else config.strip_hash
        scale = scale_from_config(run_config)
        table = load_pairs(config.data, columns, strip_hash, require_labels=False, scale=scale)
        joined = join_pairs(cache, table, run_feature_kind(run_config, run_dir))
    check_input_width(head, joined.features.shape[1], run_dir)
    report_missing(joined, table, f"; add them with: {embed_command(config, run_config, strip_hash)}")
    present = np.flatnonzero(joined.present)
    table = table.subset(present)
    X = joined.features if getattr(head, "NEEDS_FEATURES", True) else table  # baselines read the pairs themselves
    pred, proba = head.predict_scores(X, scale.labels)  # calibrated probabilities on the scale, the run's decoding
    y_true = table.labels if table.has_labels else None
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_staged(out, predictions_frame(table, pred, proba, y_true, scale.labels).to_csv(index=False))
    metrics = compute_metrics(y_true, pred, proba, scale.labels) if y_true is not None else None
    return PredictResult(out, len(present), joined.n_missing, metrics, _count_trained_on(run_dir, table))


def check_output(out: Path, overwrite: bool) -> None:
    """A predictions file, not a folder; an existing one only with --overwrite."""
    if out.is_dir():
        raise BadInputError(
            f"{out}: is a folder; pass the predictions CSV to write as --out (e.g. {out / 'scored.csv'})"
        )
    refuse_existing_file(out, overwrite)


def _count_trained_on(run_dir: Path, table) -> int:
    """How many scored pairs trained the head (its part_keys.json); warns when any did."""
    sides = read_side_keys(run_dir)
    if sides is None:
        return 0
    n = overlap_count(trained_keys(sides), table_keys(table))
    if n:
        log.warning(
            "%d of the %d scored pairs trained this head (run %s): scores on them are memorised, not predicted; "
            "metrics on this file are not a test",
            n,
            len(table),
            run_dir,
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
