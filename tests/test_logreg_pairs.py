"""logreg on concatenated pair features: logits per unique image and text, added per pair, equal the dense ones."""

import numpy as np
from test_heads_support import planted

from tagcons.heads.features import PairFeatures
from tagcons.heads.logreg import LogregHead


def _features(data, kind):
    images, image_index = np.unique(data.images, return_inverse=True)
    texts, text_index = np.unique(data.texts, return_inverse=True)
    img = np.stack([data.image_embeds[k] for k in images]).astype(np.float32)
    txt = np.stack([data.text_embeds[k] for k in texts]).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return PairFeatures(img, txt, image_index, text_index, kind)


def test_pair_logits_by_image_and_text_apart_equal_the_dense_features_probabilities():
    data = planted(n_images=30, per_image=6, dim=8, seed=4)
    X = _features(data, "concat")
    head = LogregHead(C=1.0).fit(np.asarray(X[np.arange(len(X))]), data.labels)
    for multinomial in (True, False):  # softmax, or one-vs-rest as the streamed (SGD) fit gives
        head.multinomial_ = multinomial
        dense = head.predict_proba(np.asarray(X[np.arange(len(X))]))
        np.testing.assert_allclose(head.predict_proba(X), dense, rtol=1e-5, atol=1e-6)
    assert head.predict_proba(X.subset(np.zeros(0, dtype=int))).shape == (0, 5)
    rich = _features(data, "rich")  # not linear in the sides apart: the dense path
    head = LogregHead(C=1.0).fit(np.asarray(rich[np.arange(len(rich))]), data.labels)
    np.testing.assert_allclose(head.predict_proba(rich), head.predict_proba(np.asarray(rich[np.arange(len(rich))])))


def test_a_head_deriving_its_probabilities_otherwise_keeps_its_own_on_pair_features():
    from tagcons.heads.ordinal import OrdinalHead

    data = planted(n_images=30, per_image=6, dim=8, seed=4)
    X = _features(data, "concat")
    dense = np.asarray(X[np.arange(len(X))])
    head = OrdinalHead(C=1.0).fit(dense, data.labels)
    np.testing.assert_allclose(head.predict_proba(X), head.predict_proba(dense), rtol=1e-5, atol=1e-6)
