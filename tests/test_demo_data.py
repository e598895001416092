"""The demo set: study format, documented scoring rule, study-like skew, determinism, learnable signal."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tagcons.data import load_pairs
from tagcons.demo.dataset import (
    CSV_COLUMNS,
    TARGET_SHARE,
    VOCABULARY,
    DemoConfig,
    image_specs,
    make_demo_set,
    score,
)
from tagcons.demo.drawing import COLOUR_RGB, ImageSpec
from tagcons.errors import BadInputError

TAGS = {tag.text: tag for tag in VOCABULARY}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_demo_set(out)


@pytest.fixture(scope="module")
def frame(demo):
    return pd.read_csv(demo.pairs_csv, encoding="utf-8")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_schema_columns_and_counts(demo, frame):
    demo_set = demo
    config = DemoConfig()
    assert tuple(frame.columns) == CSV_COLUMNS
    assert demo_set.pairs_csv.read_bytes()[:3] != b"\xef\xbb\xbf"  # plain UTF-8
    assert demo_set.n_images == config.n_images == frame["Image Filename"].nunique()
    assert demo_set.n_pairs == len(frame)
    expected = config.n_images * config.pairs_per_image
    assert expected <= len(frame) <= expected * 1.05
    assert frame["Image Filename"].str.fullmatch(r"(sea|sky|night|forest|sunset|snow)_\d{2}\.png").all()
    assert 40 <= frame["Hashtag"].nunique() <= 60
    assert frame["Hashtag"].value_counts().min() >= 10  # every tag seen often enough to be learnable
    assert frame["Hashtag"].str.startswith("#").any() and (~frame["Hashtag"].str.startswith("#")).any()


def test_scores_cover_1_to_5_with_the_study_skew(frame):
    share = frame["Score"].value_counts(normalize=True).sort_index()
    assert list(share.index) == [1, 2, 3, 4, 5]
    assert np.abs(share.to_numpy() - TARGET_SHARE).max() < 0.03
    assert share[5] > share[4] > share[3] > share[2] > share[1]


def test_exact_duplicate_rows_exist_and_each_image_has_distinct_tags(frame):
    duplicated = frame.duplicated()
    assert 5 <= duplicated.sum() <= 40
    assert not frame[~duplicated].duplicated(["Image Filename", "Hashtag"]).any()


def test_generation_is_deterministic(demo, tmp_path):
    demo_set = demo
    again = make_demo_set(tmp_path / "again")
    assert _digests(demo_set.pairs_csv.parent) == _digests(tmp_path / "again")
    assert again.n_pairs == demo_set.n_pairs
    other_seed = make_demo_set(tmp_path / "seed1", DemoConfig(seed=1))
    assert other_seed.pairs_csv.read_bytes() != demo_set.pairs_csv.read_bytes()


def test_load_pairs_reads_it(demo):
    demo_set = demo
    table = load_pairs(demo_set.pairs_csv)
    assert len(table) == demo_set.n_pairs
    assert len(table.unique_images()) == demo_set.n_images
    assert set(np.unique(table.labels)) == {1, 2, 3, 4, 5}


def test_every_image_exists_and_opens(demo, frame):
    images_dir = demo.images_dir
    for name in frame["Image Filename"].unique():
        with Image.open(images_dir / name) as image:
            image.load()
            assert image.size == (224, 224) and image.mode == "RGB"


def test_every_row_follows_the_documented_rule_except_the_listed_flips(demo, frame):
    specs = {spec.filename: spec for spec in image_specs(DemoConfig())}
    expected = np.array([score(TAGS[tag], specs[n]) for n, tag in zip(frame["Image Filename"], frame["Hashtag"])])
    flipped = pd.read_csv(demo.flipped_csv)
    keys = set(zip(flipped["Image Filename"], flipped["Hashtag"]))
    is_flipped = np.array([key in keys for key in zip(frame["Image Filename"], frame["Hashtag"])])
    assert (frame["Score"].to_numpy()[~is_flipped] == expected[~is_flipped]).all()
    assert (frame["Score"].to_numpy()[is_flipped] != expected[is_flipped]).all()
    assert abs(len(flipped) - DemoConfig().flip_fraction * len(frame)) < 0.01 * len(frame)
    rule = {(n, t): s for n, t, s in zip(flipped["Image Filename"], flipped["Hashtag"], flipped["Rule Score"])}
    assert all(
        rule[key] == e for key, e in zip(zip(frame["Image Filename"], frame["Hashtag"]), expected) if key in rule
    )
    assert (np.abs(flipped["Score"] - flipped["Rule Score"]) >= 2).all()


def test_rule_on_hand_picked_cases():
    spec = ImageSpec("sea_99.png", scene="바다", colour="빨강", shape="동그라미", has_text=False)
    assert score(TAGS["#빨강"], spec) == 5  # object colour
    assert score(TAGS["바다view"], spec) == 5  # scene, mixed spelling
    assert score(TAGS["#파도"], spec) == 5  # the scene's element
    assert score(TAGS["#동그라미"], spec) == 4  # shape
    assert score(TAGS["#blue"], spec) == 4  # scene colour
    assert score(TAGS["#주황"], spec) == 3  # colour-wheel neighbour
    assert score(TAGS["#하늘"], spec) == 3  # near-miss scene
    assert score(TAGS["#일상"], spec) == 3 and score(TAGS["#맞팔"], spec) == 2  # generic
    assert score(TAGS["#숲"], spec) == 2 and score(TAGS["#별"], spec) == 2 and score(TAGS["#글씨"], spec) == 2
    assert score(TAGS["#초록"], spec) == 1  # another colour


def test_images_show_their_object_colour(demo):
    """The drawn object covers a large area in (close to) its named colour: the rule scores what is visible."""
    for spec in image_specs(DemoConfig())[::7]:
        pixels = np.asarray(Image.open(demo.images_dir / spec.filename), dtype=np.int16)
        distance = np.abs(pixels - np.array(COLOUR_RGB[spec.colour])).max(axis=-1)
        assert (distance <= 14).mean() > 0.10, spec


def test_small_and_full_vocabulary_configs(tmp_path):
    small = make_demo_set(tmp_path / "small", DemoConfig(n_images=7, pairs_per_image=3, image_size=64))
    assert small.n_images == 7 and len(list(small.images_dir.glob("*.png"))) == 7
    full = make_demo_set(tmp_path / "full", DemoConfig(n_images=6, pairs_per_image=len(VOCABULARY), image_size=32))
    frame = pd.read_csv(full.pairs_csv).drop_duplicates()
    assert len(frame) == 6 * len(VOCABULARY)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_images", 0),
        ("pairs_per_image", 0),
        ("pairs_per_image", 999),
        ("image_size", 8),
        ("duplicate_fraction", 1.0),
        ("flip_fraction", 1.0),
    ],
)
def test_bad_config_is_refused(tmp_path, field, value):
    with pytest.raises(BadInputError, match=field):
        make_demo_set(tmp_path, DemoConfig(**{field: value}))


def _pixel_features(images_dir: Path, names: list[str]) -> np.ndarray:
    """A random projection of 16x16 RGB pixels: roughly what a randomly initialised encoder sees."""
    pixels = np.stack(
        [
            np.asarray(Image.open(images_dir / n).convert("RGB").resize((16, 16), Image.BILINEAR), np.float32).ravel()
            / 255
            for n in names
        ]
    )
    projection = np.random.default_rng(0).normal(size=(pixels.shape[1], 64)) / np.sqrt(pixels.shape[1])
    return (pixels - pixels.mean(axis=0)) @ projection


def _macro_f1_of(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    from sklearn.metrics import f1_score
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier((64,), max_iter=100, random_state=0).fit(features[train], labels[train])
    return f1_score(labels[test], model.predict(features[test]), average="macro")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scores_are_learnable_from_pixels_and_tag_identity(demo, frame):
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupShuffleSplit
    from threadpoolctl import threadpool_limits

    names = sorted(frame["Image Filename"].unique())
    image_features = _pixel_features(demo.images_dir, names)[frame["Image Filename"].map(names.index)]
    tag_ids = pd.factorize(frame["Hashtag"], sort=True)[0]
    tag_onehot = np.eye(tag_ids.max() + 1)[tag_ids]
    labels = frame["Score"].to_numpy()
    train, test = next(
        GroupShuffleSplit(1, test_size=0.2, random_state=0).split(labels, labels, frame["Image Filename"])
    )
    majority = f1_score(labels[test], np.full(len(test), 5), average="macro")
    with threadpool_limits(1):  # tiny matrices: threads only add overhead on a shared 2-core machine
        both = _macro_f1_of(np.hstack([image_features, tag_onehot]), labels, train, test)
        tag_only = _macro_f1_of(tag_onehot, labels, train, test)
    assert both - majority >= 0.10
    assert both - tag_only >= 0.10  # the picture matters, not just which tag it is
