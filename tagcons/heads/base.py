"""Common behaviour of heads: scikit-learn estimator rules, classes learned from y, pickle-free persistence.

A head's ``fit(X, y, groups=None)`` takes features X (a numpy array or a `PairFeatures`, which
builds rows on demand), integer scores y (any ordered integers: ``classes_`` are the sorted scores
seen, as in any scikit-learn classifier) and optionally the image of each row, so inner validation
splits can be grouped by image. ``predict_proba`` has one column per ``classes_``; `on_scale`
spreads it over a run's whole score scale. Saved state is ``head.json`` (name, hyperparameters,
small learned values) plus at most one data file per head (npz, safetensors or LightGBM text);
loading never executes code from the run directory.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, column_or_1d

from tagcons.errors import BadInputError
from tagcons.heads.decode import ScoreRule
from tagcons.heads.features import PairFeatures
from tagcons.heads.registry import get_head_class, head_names
from tagcons.labels import LABELS, class_weights

HEAD_FILE = "head.json"
REFIT = "the run directory is damaged or was edited; refit it with `tagcons fit-head`"
PREDICT_CHUNK = 16384  # rows per block: 16k x 1536 float32 = 100 MB


class Head(ClassifierMixin, BaseEstimator):
    """Base class; subclasses implement fit, predict_proba, _state and _restore."""

    name = "head"
    OBJECTIVES: tuple[str, ...] = ()
    # What a fine-tuning head can start from (`finetune --init-head`): "linear" (coef_, intercept_,
    # mean_, scale_), "network" (model_ with the fine-tuning head's layout) or None.
    init_kind: str | None = None
    PROBABILISTIC = True  # False for heads that only rank (their predict_proba is one-hot)
    rule_ = ScoreRule()  # temperature and decoding fitted after training (tagcons.heads.calibrate)

    @property
    def probabilistic(self) -> bool:
        return self.PROBABILISTIC

    PARAM_TYPES: dict = {}  # setting -> tagcons.heads.params type, where the default does not tell it

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _fit_input(self, X, y):
        """scikit-learn's input rules for arrays (a `PairFeatures` table, built lazily, is taken as it is);
        y must be integer scores of at least two classes."""
        if isinstance(X, PairFeatures):
            y = column_or_1d(y, warn=True)
        else:
            X, y = check_X_y(X, y, accept_sparse=False)
        check_classification_targets(y)
        self.n_features_in_ = int(X.shape[1])
        return X, check_labels(y)

    def _predict_input(self, X):
        """Fitted, and X shaped like the training features."""
        check_is_fitted(self)
        if isinstance(X, PairFeatures):
            return X
        X = check_array(X, accept_sparse=False)
        expected = getattr(self, "n_features_in_", X.shape[1])  # heads saved before it was recorded
        if X.shape[1] != expected:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {expected} features as input"
            )
        return X

    def extra_test_metrics(self, X, y) -> dict:
        """Head-specific comparisons reported beside the test metrics (none by default)."""
        return {}

    def scale_proba(self, X, labels=LABELS) -> np.ndarray:
        """Raw probabilities spread over the run's scale ``labels`` (one column per score)."""
        return on_scale(self.predict_proba(X), self.classes_, labels)

    def calibrated_proba(self, X, labels=LABELS) -> np.ndarray:
        """Probabilities on the scale after the saved temperature (the raw ones for heads that only rank)."""
        raw = self.scale_proba(X, labels)
        return self.rule_.proba(raw) if self.probabilistic else raw

    def predict_scores(self, X, labels=LABELS) -> tuple[np.ndarray, np.ndarray]:
        """(scores under the saved decoding, calibrated probabilities on the scale): what runs and `predict` report."""
        if not self.probabilistic:
            return self.predict(X), self.scale_proba(X, labels)
        proba = self.calibrated_proba(X, labels)
        return self.rule_.scores(proba, labels=labels), proba

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
            "classes": [int(c) for c in self.classes_],
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
        head.classes_ = np.asarray(payload.get("classes", LABELS))  # runs saved before classes_ were 1-5
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


def on_scale(proba: np.ndarray, classes, labels=LABELS) -> np.ndarray:
    """Spread columns for ``classes`` (the scores a head saw in training) over every score in ``labels``."""
    out = np.zeros((len(proba), len(labels)), dtype=np.float64)
    out[:, np.searchsorted(np.asarray(labels), np.asarray(classes))] = proba
    return out


def one_hot(pred: np.ndarray, classes) -> np.ndarray:
    """Probabilities for heads that only rank: all mass on the predicted class."""
    out = np.zeros((len(pred), len(classes)), dtype=np.float64)
    out[np.arange(len(pred)), np.searchsorted(np.asarray(classes), np.asarray(pred))] = 1.0
    return out


def chunked(fn, X, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Apply ``fn`` to row blocks of X so a PairFeatures table is never built whole."""
    if len(X) <= chunk:
        return fn(X[np.arange(len(X))] if not isinstance(X, np.ndarray) else X)
    return np.concatenate([fn(X[np.arange(s, min(s + chunk, len(X)))]) for s in range(0, len(X), chunk)])


def class_weighting(setting, y: np.ndarray, classes=None) -> np.ndarray | None:
    """The class weights every weighting head uses: balanced on `y` (its training rows), or None when off.

    One weight per class in `classes` (default: the sorted scores in `y`, a head's ``classes_``).
    `setting` is a head's ``class_weight`` parameter: "balanced" (every head's default), None/"none", or
    scikit-learn's {class: weight} (classes not named weigh 1).
    """
    if setting is None or setting == "none":
        return None
    classes = np.unique(y) if classes is None else classes
    if isinstance(setting, dict):
        return np.asarray([float(setting.get(c, 1.0)) for c in classes])
    if setting != "balanced":
        raise BadInputError(f"class_weight={setting}: use balanced (the default), none or {{score: weight}}")
    return class_weights(y, classes)


def class_weight_map(setting, y: np.ndarray) -> dict | None:
    """`class_weighting` as scikit-learn's ``class_weight`` argument: {score: weight} for the scores in `y`."""
    weights = class_weighting(setting, y)
    return None if weights is None else {int(c): float(w) for c, w in zip(np.unique(y), weights)}


def check_labels(y) -> np.ndarray:
    """Integer scores with at least two distinct values (the scale itself is checked when pairs load)."""
    y = np.asarray(y)
    if len(y) == 0:
        raise BadInputError("no training rows: the training part is empty")
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"scores must be integers; found {sorted(set(y.tolist()))[:5]}")
    y = y.astype(int)
    if len(np.unique(y)) < 2:
        raise BadInputError(f"the training part holds only score {y[0]} (one class); a head needs at least two scores")
    return y
