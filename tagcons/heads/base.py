"""Common behaviour of heads: scikit-learn estimator rules, fixed 1-5 classes, pickle-free persistence.

A head's ``fit(X, y, groups=None)`` takes features X (a numpy array or a `PairFeatures`, which
builds rows on demand), integer scores y in 1..5 and optionally the image of each row, so inner
validation splits can be grouped by image. Saved state is ``head.json`` (name, hyperparameters,
small learned values) plus at most one data file per head (npz, safetensors or LightGBM text);
loading never executes code from the run directory.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import LABELS
from tagcons.heads.decode import ScoreRule
from tagcons.heads.registry import get_head_class, head_names

HEAD_FILE = "head.json"
REFIT = "the run directory is damaged or was edited; refit it with `tagcons fit-head`"
SMALL_TABLE_ROWS = 50_000
PREDICT_CHUNK = 16384  # rows per block: 16k x 1536 float32 = 100 MB
CLASSES = np.asarray(LABELS)


class Head(BaseEstimator):
    """Base class; subclasses implement fit, predict_proba, _state and _restore."""

    name = "head"
    OBJECTIVES: tuple[str, ...] = ()
    PROBABILISTIC = True  # False for heads that only rank (their predict_proba is one-hot)
    rule_ = ScoreRule()  # temperature and decoding fitted after training (tagcons.heads.calibrate)

    @property
    def probabilistic(self) -> bool:
        return self.PROBABILISTIC

    PARAM_TYPES: dict = {}  # setting -> tagcons.heads.params type, where the default does not tell it

    def predict(self, X) -> np.ndarray:
        return CLASSES[np.argmax(self.predict_proba(X), axis=1)]

    def calibrated_proba(self, X) -> np.ndarray:
        """Probabilities after the saved temperature (the raw ones for heads that only rank)."""
        raw = self.predict_proba(X)
        return self.rule_.proba(raw) if self.probabilistic else raw

    def predict_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(scores under the saved decoding, calibrated probabilities): what runs and `predict` report."""
        if not self.probabilistic:
            return self.predict(X), self.predict_proba(X)
        proba = self.calibrated_proba(X)
        return self.rule_.scores(proba), proba

    def _state(self, run_dir: Path) -> dict:
        """Write data files into run_dir; return the small JSON-able learned values."""
        raise NotImplementedError

    def _restore(self, run_dir: Path, state: dict) -> None:
        """Rebuild from saved state; check every value, shape and count (`require`, `reading`)."""
        raise NotImplementedError

    def input_width(self) -> int | None:
        """Feature columns the fitted head expects (None: any width)."""
        return None

    def save(self, run_dir: str | Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "head": self.name,
            "params": self.get_params(),
            "state": self._state(run_dir),
            "rule": self.rule_.to_json(),
        }
        path = run_dir / HEAD_FILE
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path


def load_head(run_dir: str | Path) -> Head:
    """Rebuild a fitted head from ``run_dir/head.json`` and its data file."""
    run_dir = Path(run_dir)
    path = run_dir / HEAD_FILE
    if not path.is_file():
        raise BadInputError(f"{run_dir}: no {HEAD_FILE}; pass a run directory written by `tagcons fit-head`")
    with reading(path):
        payload = json.loads(path.read_text(encoding="utf-8"))
        _check_payload(payload, path)
        head = get_head_class(payload["head"])(**payload["params"])
        head._restore(run_dir, payload["state"])
        head.rule_ = ScoreRule.from_json(payload.get("rule"))
    return head


def _check_payload(payload, path: Path) -> None:
    require(isinstance(payload, dict), path, "is not a JSON object")
    missing = [key for key in ("head", "params", "state") if key not in payload]
    require(not missing, path, f"lacks {', '.join(missing)}")
    require(payload["head"] in head_names(), path, f"names an unknown head {payload['head']!r}")
    require(isinstance(payload["params"], dict) and isinstance(payload["state"], dict), path, "params/state malformed")


def require(condition, path: Path, problem: str) -> None:
    """A saved head's file failed a check: one BadInputError naming the file and the repair."""
    if not condition:
        raise BadInputError(f"{path}: {problem}; {REFIT}")


@contextlib.contextmanager
def reading(path: Path, problem: str = "cannot be read as part of a saved head"):
    """Any failure while rebuilding a head from `path` becomes one BadInputError naming that file."""
    try:
        yield
    except BadInputError:
        raise
    except Exception as e:  # the file came from disk: whatever breaks on it, the file is damaged or edited
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInputError(f"{path}: {problem} ({type(e).__name__}: {first}); {REFIT}") from e


def check_finite_sorted(values: np.ndarray, count: int, path: Path, name: str) -> None:
    """Cut-points: exactly `count` finite numbers in increasing order."""
    require(
        values.shape == (count,) and np.isfinite(values).all() and (np.diff(values) >= 0).all(),
        path,
        f"{name} must be {count} increasing numbers, found {values.tolist()}",
    )


def full_proba(proba: np.ndarray, classes) -> np.ndarray:
    """Spread columns for ``classes`` (a subset of 1..5 seen in training) into 5 columns."""
    out = np.zeros((len(proba), len(LABELS)), dtype=np.float64)
    out[:, np.asarray(classes).astype(int) - 1] = proba
    return out


def one_hot(pred: np.ndarray) -> np.ndarray:
    """Probabilities for heads that only rank: all mass on the predicted score."""
    out = np.zeros((len(pred), len(LABELS)), dtype=np.float64)
    out[np.arange(len(pred)), np.asarray(pred).astype(int) - 1] = 1.0
    return out


def chunked(fn, X, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Apply ``fn`` to row blocks of X so a PairFeatures table is never built whole."""
    if len(X) <= chunk:
        return fn(X[np.arange(len(X))] if not isinstance(X, np.ndarray) else X)
    return np.concatenate([fn(X[np.arange(s, min(s + chunk, len(X)))]) for s in range(0, len(X), chunk)])


def balanced_class_weights(y: np.ndarray) -> np.ndarray:
    """Per-score weights n / (K * count) for scores 1..K; a score absent from `y` gets weight 0."""
    counts = np.bincount(np.asarray(y).astype(int) - 1, minlength=len(LABELS)).astype(np.float64)
    return np.divide(len(y), len(LABELS) * counts, out=np.zeros_like(counts), where=counts > 0)


def class_weighting(setting, y: np.ndarray) -> np.ndarray | None:
    """The class weights every weighting head uses: balanced on `y` (its training rows), or None when off.

    `setting` is a head's ``class_weight`` parameter: "balanced" (every head's default) or None/"none".
    """
    if setting is None or setting == "none":
        return None
    if setting != "balanced":
        raise BadInputError(f"class_weight={setting}: use balanced (the default) or none")
    return balanced_class_weights(y)


def class_weight_map(setting, y: np.ndarray) -> dict | None:
    """`class_weighting` as scikit-learn's ``class_weight`` argument: {score: weight} for the scores in `y`."""
    weights = class_weighting(setting, y)
    return None if weights is None else {int(c): float(weights[c - 1]) for c in np.unique(y)}


def check_labels(y) -> np.ndarray:
    y = np.asarray(y).astype(int)
    if len(y) == 0:
        raise BadInputError("no training rows: the training part is empty")
    if y.min() < LABELS[0] or y.max() > LABELS[-1]:
        raise BadInputError(f"training labels must be scores 1-5; found {sorted(set(y.tolist()))}")
    if len(np.unique(y)) < 2:
        raise BadInputError(f"the training part holds only score {y[0]}; a head needs at least two scores")
    return y


def auto_threads(n_rows: int, threads: int | None) -> int | None:
    """Threads for a fit: as asked, else 1 for small tables (None = library default for large ones).

    On a few thousand rows thread synchronisation costs more than it saves, and on a busy machine
    spinning OpenMP/BLAS threads make a 2-thread fit 10x slower than a 1-thread one (measured).
    """
    if threads is not None:
        return threads
    return 1 if n_rows < SMALL_TABLE_ROWS else None


@contextlib.contextmanager
def limited_threads(threads: int | None):
    """Limit BLAS/OpenMP and torch intra-op threads inside the block; restore them afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)
