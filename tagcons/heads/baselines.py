"""Shortcut baselines: heads that never look at pixels, so a real head must beat them to show it uses the image.

- ``text-only``: logistic regression on the hashtag's character n-grams (scikit-learn's
  ``TfidfVectorizer(analyzer="char_wb")``); with ``image_onehot=True`` also a one-hot image id, the
  model that exposes how much the study's pairs split leaks through the image.
- ``image-prior``: each image's mean training score, rounded; the global mean for images the training
  part never saw (under the images split: every test image).

They take the pairs themselves as X (anything with ``images`` and ``texts``, e.g. a `PairTable`), so
they need no cache (``NEEDS_FEATURES = False``). `shortcut_baselines` scores both, plus the majority
baseline, for every run's metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from tagcons.evaluate.intervals import bootstrap_intervals
from tagcons.evaluate.metrics import compute_metrics, majority_label
from tagcons.heads.base import Head, check_labels, class_weight_map, on_scale, one_hot
from tagcons.heads.params import at_least, positive
from tagcons.heads.registry import register_head
from tagcons.labels import LABELS
from tagcons.runtime import auto_threads, limited_threads

TEXT_STATE = "text_only.npz"
BASELINE_NAMES = ("majority", "text_only", "image_prior")


def _strings(values) -> list[str]:
    return [str(v) for v in np.asarray(values)]


@register_head("text-only")
class TextOnlyHead(Head):
    NEEDS_FEATURES = False
    PARAM_RANGES = {"C": positive(), "ngram_min": at_least(1), "ngram_max": at_least(1), "max_iter": at_least(1)}

    def __init__(self, C=1.0, ngram_min=2, ngram_max=4, image_onehot=False, class_weight="balanced", max_iter=1000):
        self.C = C
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.image_onehot = image_onehot
        self.class_weight = class_weight
        self.max_iter = max_iter

    def _vectorizer(self) -> TfidfVectorizer:
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(self.ngram_min, self.ngram_max), lowercase=True)

    def fit(self, X, y, groups=None):
        y = check_labels(y)
        self.vectorizer_ = self._vectorizer().fit(_strings(X.texts))
        self.image_ids_ = {key: i for i, key in enumerate(dict.fromkeys(_strings(X.images)))}
        weights = class_weight_map(self.class_weight, y)  # the same balanced weights as every head
        self.model_ = LogisticRegression(C=self.C, class_weight=weights, max_iter=self.max_iter)
        with limited_threads(auto_threads(len(y), None)):
            self.model_.fit(self._design(X), y)
        self.classes_ = self.model_.classes_
        return self

    def _design(self, X):
        text = self.vectorizer_.transform(_strings(X.texts))
        if not self.image_onehot:
            return text
        columns = np.asarray([self.image_ids_.get(key, -1) for key in _strings(X.images)])
        rows = np.flatnonzero(columns >= 0)  # an image never seen in training has an all-zero id block
        onehot = sp.csr_matrix((np.ones(len(rows)), (rows, columns[rows])), shape=(len(columns), len(self.image_ids_)))
        return sp.hstack([text, onehot], format="csr")

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(self._design(X))

    def _state(self, run_dir: Path) -> dict:
        np.savez(
            run_dir / TEXT_STATE,
            idf=self.vectorizer_.idf_,
            coef=self.model_.coef_,
            intercept=self.model_.intercept_,
            classes=self.model_.classes_,
        )
        return {
            "vocabulary": {k: int(v) for k, v in self.vectorizer_.vocabulary_.items()},
            "images": list(self.image_ids_),
        }

    def _restore(self, run_dir: Path, state: dict) -> None:
        with np.load(run_dir / TEXT_STATE, allow_pickle=False) as data:  # NumPy's default, said out loud
            saved = {name: data[name] for name in ("idf", "coef", "intercept", "classes")}
        self.vectorizer_ = self._vectorizer()
        self.vectorizer_.vocabulary_ = dict(state["vocabulary"])
        self.vectorizer_.idf_ = saved["idf"]
        self.image_ids_ = {key: i for i, key in enumerate(state["images"])}
        self.model_ = LogisticRegression(C=self.C, class_weight=self.class_weight)
        self.model_.coef_, self.model_.intercept_, self.model_.classes_ = (
            saved["coef"],
            saved["intercept"],
            saved["classes"],
        )
        self.classes_ = np.asarray(saved["classes"])


@register_head("image-prior")
class ImagePriorHead(Head):
    NEEDS_FEATURES = False
    PROBABILISTIC = False  # a rounded mean: its probabilities are one-hot

    def __init__(self):
        pass

    def fit(self, X, y, groups=None):
        y = check_labels(y)
        images = np.asarray(_strings(X.images))
        keys, code = np.unique(images, return_inverse=True)
        means = np.bincount(code, weights=y) / np.bincount(code)
        self.image_means_ = dict(zip(keys.tolist(), means.tolist()))
        self.global_mean_ = float(y.mean())
        self.classes_ = np.unique(y)
        return self

    def predict(self, X) -> np.ndarray:
        means = np.asarray([self.image_means_.get(key, self.global_mean_) for key in _strings(X.images)])
        distance = np.abs(means[:, None] - self.classes_[None, ::-1])
        return self.classes_[::-1][np.argmin(distance, axis=1)]  # the nearest class; halves round up

    def predict_proba(self, X) -> np.ndarray:
        return one_hot(self.predict(X), self.classes_)

    def _state(self, run_dir: Path) -> dict:
        return {"image_means": self.image_means_, "global_mean": self.global_mean_}

    def _restore(self, run_dir: Path, state: dict) -> None:
        self.image_means_, self.global_mean_ = dict(state["image_means"]), float(state["global_mean"])


def shortcut_predictions(train, y_train, test, labels=LABELS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(pred, proba over ``labels``) on ``test`` of each pixel-free baseline fitted on ``train`` (pair tables)."""
    out = {}
    for name, head in (("text_only", TextOnlyHead()), ("image_prior", ImagePriorHead())):
        head.fit(train, y_train)
        proba = head.predict_proba(test)
        out[name] = (head.classes_[np.argmax(proba, axis=1)], on_scale(proba, head.classes_, labels))
    return out


def scored_baselines(
    y_test, predictions: dict[str, np.ndarray], images, seed: int = 0, labels=LABELS, rows: str = "test"
) -> dict:
    """Each baseline's metrics on the test rows, with their image-clustered 95% intervals (``ci95``) and
    ``rows`` naming those rows ("out-of-fold" for pooled CV predictions)."""
    return {
        name: {
            **compute_metrics(y_test, predictions[name], labels=labels),
            **_intervals(y_test, predictions[name], images, seed, labels),
            "rows": rows,
        }
        for name in BASELINE_NAMES
    }


def _intervals(y_test, pred, images, seed: int, labels) -> dict:
    return {"ci95": bootstrap_intervals(y_test, pred, images, seed=seed, labels=labels)["ci95"]}


def shortcut_baselines(train, y_train, test, y_test, seed: int = 0, labels=LABELS) -> dict:
    """metrics.json's ``baselines``: majority, text_only and image_prior, each fitted on ``train`` only."""
    label = majority_label(y_train, labels)
    predictions = {name: pred for name, (pred, _) in shortcut_predictions(train, y_train, test, labels).items()}
    predictions["majority"] = np.full(len(y_test), label)
    baselines = scored_baselines(y_test, predictions, test.images, seed, labels)
    baselines["majority"]["label"] = label
    return baselines
