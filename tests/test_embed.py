import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from embed_helpers import assert_features_close, assert_same_contents, cache_contents, embed, make_image_set
from PIL import Image

import tagcons.cache
from tagcons.cache import CacheWriter
from tagcons.embed import load_backbone
from tagcons.embed.extractor import EmbedConfig, cache_meta
from tagcons.embed.features import image_features
from tagcons.embed.text_encoding import encode_texts
from tagcons.errors import BackboneUnavailableError, CacheBusyError, FingerprintMismatchError, StrictFailure


@pytest.fixture
def image_set(tmp_path):
    return make_image_set(tmp_path)


def test_only_unique_keys_are_encoded_and_a_rerun_encodes_nothing(tmp_path, image_set):
    pairs, images = image_set
    first = embed(pairs, images, tmp_path / "c.h5")
    assert (first.images_new, first.texts_new) == (12, 8)
    second = embed(pairs, images, tmp_path / "c.h5")
    assert (second.images_new, second.texts_new, second.images_cached, second.texts_cached) == (0, 0, 12, 8)
    with tagcons.cache.open(tmp_path / "c.h5") as cache:
        assert cache.backbone == "tiny" and cache.projection_dim == 64
        assert len(cache.image_keys) == 12 and len(cache.text_keys) == 8


def test_added_rows_and_changed_images_are_the_only_work(tmp_path, image_set):
    pairs, images = image_set
    embed(pairs, images, tmp_path / "c.h5")
    before = cache_contents(tmp_path / "c.h5")
    Image.new("RGB", (30, 30), (0, 255, 255)).save(images / "cat_03.png")
    Image.new("RGB", (30, 30), (9, 9, 9)).save(images / "new.png")
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("new.png,#새태그,4\n")
    summary = embed(pairs, images, tmp_path / "c.h5")
    assert (summary.images_new, summary.texts_new) == (2, 1)
    after = cache_contents(tmp_path / "c.h5")
    assert not np.allclose(before["images"]["cat_03.png"], after["images"]["cat_03.png"])
    np.testing.assert_array_equal(before["images"]["cat_01.png"], after["images"]["cat_01.png"])


def test_batched_features_equal_one_at_a_time(tmp_path, image_set):
    pairs, images = image_set
    embed(pairs, images, tmp_path / "batched.h5", batch_size=5, workers=2)
    embed(pairs, images, tmp_path / "single.h5", batch_size=1)
    assert_same_contents(cache_contents(tmp_path / "batched.h5"), cache_contents(tmp_path / "single.h5"))


def test_padding_does_not_change_a_text_embedding():
    backbone = load_backbone("tiny")
    texts = ["a", "#아주 긴 해시태그 문장입니다 정말로", "중간 길이"]
    with torch.inference_mode():
        together = encode_texts(backbone, texts, "{}", batch_size=3, device="cpu")
        alone = np.concatenate([encode_texts(backbone, [t], "{}", 1, "cpu") for t in texts])
    assert_features_close(together, alone)


def test_failed_images_are_recorded_counted_and_strict_exits_after_saving(tmp_path, image_set):
    pairs, images = image_set
    (images / "broken.png").write_bytes(b"not a png")
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("broken.png,#x,1\nmissing.png,#x,1\n")
    with pytest.raises(StrictFailure, match="2 image"):
        embed(pairs, images, tmp_path / "c.h5", strict=True)
    contents = cache_contents(tmp_path / "c.h5")
    assert len(contents["images"]) == 12
    assert set(contents["failed"]) == {"broken.png", "missing.png"}
    assert "not an image" in contents["failed"]["broken.png"]
    rerun = embed(pairs, images, tmp_path / "c.h5")
    assert (rerun.images_new, rerun.images_cached, rerun.images_failed) == (0, 12, 2)


def test_tiny_backbone_is_deterministic_and_round_trips_through_a_local_directory(tmp_path, image_set):
    pairs, images = image_set
    first, second = load_backbone("tiny"), load_backbone("tiny")
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    first.save_pretrained(tmp_path / "ckpt")
    local = load_backbone(str(tmp_path / "ckpt"))
    assert local.revision.startswith("sha256:") and local.projection_dim == 64
    embed(pairs, images, tmp_path / "tiny.h5")
    embed(pairs, images, tmp_path / "local.h5", backbone=str(tmp_path / "ckpt"))
    assert_same_contents(cache_contents(tmp_path / "tiny.h5"), cache_contents(tmp_path / "local.h5"))


def test_tiny_features_match_recorded_values():
    """Same features on every machine: these numbers were recorded once and must not drift."""
    backbone = load_backbone("tiny")
    pixels = torch.full((1, 3, 64, 64), 0.5)
    with torch.inference_mode():
        features = image_features(backbone.model, pixels)[0, :4].numpy()
        text = encode_texts(backbone, ["#바다"], "{}", 1, "cpu")[0, :4]
    np.testing.assert_allclose(features, TINY_IMAGE_VALUES, atol=1e-4)
    np.testing.assert_allclose(text, TINY_TEXT_VALUES, atol=1e-4)


TINY_IMAGE_VALUES = [0.44713, 0.43001, 0.98530, -1.01881]
TINY_TEXT_VALUES = [-0.56322, -0.28813, 0.40680, 0.93822]


def test_unreachable_hub_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("clip")
    message = str(info.value)
    assert "openai/clip-vit-base-patch32" in message and "unreachable" in message and "save_pretrained" in message


def test_a_second_writer_is_refused(tmp_path, image_set):
    pairs, images = image_set
    meta = cache_meta(load_backbone("tiny"), EmbedConfig(pairs, images, "tiny", tmp_path / "c.h5"), torch.float32)
    with CacheWriter(tmp_path / "c.h5", meta), pytest.raises(CacheBusyError):
        embed(pairs, images, tmp_path / "c.h5")


def test_other_settings_on_the_same_cache_are_refused(tmp_path, image_set):
    pairs, images = image_set
    embed(pairs, images, tmp_path / "c.h5")
    with pytest.raises(FingerprintMismatchError):
        embed(pairs, images, tmp_path / "c.h5", text_templates=("a photo tagged {}",))


KILL_SCRIPT = """
import sys
from embed_helpers import embed
from pathlib import Path
root = Path(sys.argv[1])
embed(root / "pairs.csv", root / "images", root / "c.h5", batch_size=1, commit_rows=1)
"""


@pytest.mark.slow
@pytest.mark.parametrize("parts_before_kill", [1, 6, 13])
def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path, image_set, parts_before_kill):
    pairs, images = image_set
    embed(pairs, images, tmp_path / "clean.h5")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], env=env)
    parts = tmp_path / "c.h5.parts"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if parts.is_dir() and len(list(parts.glob("*.h5"))) >= parts_before_kill:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = _images_saved_before_the_kill(tmp_path / "c.h5")
    assert len(list(parts.glob("*.h5"))) >= parts_before_kill or tmp_path.joinpath("c.h5").is_file()
    resumed = embed(pairs, images, tmp_path / "c.h5")
    assert resumed.images_cached == len(saved) and resumed.images_new == 12 - len(saved)  # nothing redone
    assert_same_contents(cache_contents(tmp_path / "clean.h5"), cache_contents(tmp_path / "c.h5"))


def _images_saved_before_the_kill(cache) -> set:
    """Image keys a resumed run must reuse: those in committed part files (plus a consolidated cache)."""
    from tagcons.cache.merge import replay

    saved = set(replay(tagcons.cache.pending_parts(cache)).images)
    if cache.is_file():
        with tagcons.cache.open(cache) as reader:
            saved |= set(reader.image_keys)
    return saved


def test_reference_table_with_placeholder_images_embeds_end_to_end(tmp_path, reference_csv):
    from tagcons.data import load_pairs

    images = tmp_path / "images"
    images.mkdir()
    for i, key in enumerate(load_pairs(reference_csv).unique_images()):
        Image.new("RGB", (32, 32), (i % 256, (7 * i) % 256, (13 * i) % 256)).save(images / key)
    summary = embed(reference_csv, images, tmp_path / "ref.h5", batch_size=64)
    assert (summary.images_new, summary.images_failed) == (172, 0)
    assert summary.texts_new == 1374  # 1,375 raw strings; two differ only by Unicode normalisation or spaces
    with tagcons.cache.open(tmp_path / "ref.h5") as cache:
        lookup = cache.lookup(load_pairs(reference_csv).images, load_pairs(reference_csv).texts)
    assert lookup.present.all() and lookup.image_embeds.shape == (2022, 64)


@pytest.mark.parametrize("template", ["{} and {}", "{} {0.__class__}", "{0}", "{!r}", "{{}}", "{:>9}"])
def test_a_template_with_any_field_but_one_plain_pair_of_braces_is_refused_before_embedding(
    tmp_path, image_set, capsys, template
):
    from test_cli import run_cli

    pairs, images = image_set
    args = ["embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", tmp_path / "c.h5"]
    code, _, err = run_cli([*args, "--text-template", template, "--workers", "0"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"--text-template '{template}'" in err and "exactly one plain '{}'" in err
    assert not (tmp_path / "c.h5").exists()  # nothing embedded
