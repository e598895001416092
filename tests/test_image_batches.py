"""The one image batch pipeline (`tagcons.data.image_batches`) and its two users, embed and finetune."""

import numpy as np
import pytest
import torch
from embed_helpers import assert_features_close, cache_contents, embed
from PIL import Image

from tagcons.data import image_batches
from tagcons.data.image_batches import BatchPreprocessor, ImageFiles, ImagePipeline, read_image
from tagcons.data.images import ImageLoadError, reduced_side
from tagcons.data.pairs import load_pairs
from tagcons.embed.backbones import load_backbone
from tagcons.embed.features import image_features
from tagcons.finetune.data import Collate, TokenTable, exclude_unloadable

FAILING = ["corrupt.jpg", "missing.jpg"]


def _noise(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def mixed(tmp_path):
    """pairs.csv and a folder: a large and two small JPEGs, a PNG, a corrupt JPEG, a missing file."""
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(1200, 800), (90, 120), (150, 100)]):
        _noise(size, i).save(images / f"photo_{i}.jpg", quality=90)
    _noise((70, 60), 9).save(images / "drawing.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 200)
    names = ["photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "drawing.png", *FAILING]
    rows = [f"{name},#태그{j},{1 + (i + j) % 5}" for i, name in enumerate(names) for j in range(2)]
    (tmp_path / "pairs.csv").write_text("Image Filename,Hashtag,Score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "pairs.csv", images


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny")


def test_embed_and_finetune_see_the_same_images_failures_and_pixels(mixed, tiny, tmp_path, monkeypatch):
    pairs, images = mixed
    sizes = []
    original = BatchPreprocessor.__call__

    def spy(self, batch):
        sizes.extend(image.size for _, image, _ in batch if image is not None)
        return original(self, batch)

    monkeypatch.setattr(BatchPreprocessor, "__call__", spy)
    summary = embed(pairs, images, tmp_path / "cache.h5")
    cached = cache_contents(tmp_path / "cache.h5")
    kept, failed = exclude_unloadable(load_pairs(pairs), images)
    assert failed == cached["failed"] == summary.failures and sorted(failed) == sorted(FAILING)
    assert sorted(set(kept.images)) == sorted(cached["images"]) and len(kept.images) == 8
    batch = Collate(kept, images, tiny.image_processor, TokenTable.build(kept.texts, tiny))(list(range(8)))
    with torch.inference_mode():
        features = image_features(tiny.model, batch["pixel_values"]).numpy()
    for row, key in enumerate(kept.images):
        assert_features_close(features[row], cached["images"][key], err_msg=key)
    assert max(max(size) for size in sizes) <= 3 * reduced_side(tiny.image_processor) // 2  # both decode reduced


def test_the_loader_and_a_call_by_indices_give_the_same_batches(mixed, tiny):
    _, images = mixed
    keys = ["photo_1.jpg", "missing.jpg", "drawing.png", "photo_0.jpg", "corrupt.jpg", "photo_2.jpg"]
    pipeline = ImagePipeline(images, keys, tiny.image_processor)
    batches = list(pipeline.loader(batch_size=4, workers=0))
    assert [indices for indices, _, _ in batches] == [[0, 2, 3], [5]]
    assert [failed for _, _, failed in batches] == [[(1, "file not found")], [(4, read_image(images, FAILING[0])[1])]]
    indices, pixels, failed = pipeline([0, 1, 2, 3])
    assert indices == [0, 2, 3] and failed == [(1, "file not found")]
    assert torch.equal(pixels, batches[0][1]) and pixels.dtype == torch.float32


def test_a_key_shared_by_several_rows_is_decoded_once_per_batch(mixed, monkeypatch):
    _, images = mixed
    opened = []
    original = image_batches.open_image
    monkeypatch.setattr(
        image_batches, "open_image", lambda root, key, side: opened.append(key) or original(root, key, side)
    )
    rows = ImageFiles(images, np.array(["photo_1.jpg", "drawing.png", "photo_1.jpg", "missing.jpg"]), 256)
    items = rows.read(np.array([2, 0, 1, 3, 3]))
    assert [index for index, _, _ in items] == [2, 0, 1, 3, 3] and items[0][1] is items[1][1]
    assert sorted(opened) == ["drawing.png", "missing.jpg", "photo_1.jpg"]
    assert items[3][1:] == (None, "file not found")


def test_failures_are_found_once_per_key_with_their_reasons(mixed):
    _, images = mixed
    keys = ["photo_2.jpg", "missing.jpg", "corrupt.jpg", "missing.jpg", "drawing.png"]
    failures = ImageFiles(images, keys).failures(threads=2)
    assert list(failures) == ["missing.jpg", "corrupt.jpg"]
    assert failures["corrupt.jpg"].startswith("corrupt or truncated image")


class _RefusesTinyImages:
    """An image processor that, like some real ones, raises on images below a few pixels."""

    def __call__(self, images, return_tensors):
        if any(min(image.size) < 4 for image in images):
            raise ValueError("image too small")
        return {"pixel_values": np.stack([np.asarray(image.resize((8, 8)), np.float32).T for image in images])}


def test_an_image_the_processor_refuses_fails_alone_and_the_rest_of_the_batch_goes_on():
    good, dot = Image.new("RGB", (20, 20), "red"), Image.new("RGB", (1, 1), "blue")
    batch = [(0, good, None), (1, dot, None), (2, None, "file not found"), (3, good, None)]
    indices, pixels, failed = BatchPreprocessor(_RefusesTinyImages())(batch)
    assert indices == [0, 3] and pixels.shape == (2, 3, 8, 8)
    assert failed == [(2, "file not found"), (1, "preprocessing failed (ValueError: image too small)")]


def test_a_batch_with_no_image_left_has_no_pixels():
    assert BatchPreprocessor(_RefusesTinyImages())([(0, None, "file not found")]) == ([], None, [(0, "file not found")])


def test_finetune_stops_when_an_image_breaks_after_the_scan(mixed, tiny):
    pairs, images = mixed
    kept, _ = exclude_unloadable(load_pairs(pairs), images)
    collate = Collate(kept, images, tiny.image_processor, TokenTable.build(kept.texts, tiny))
    (images / "drawing.png").unlink()
    with pytest.raises(ImageLoadError, match="drawing.png: file not found"):
        collate([0, 6])
