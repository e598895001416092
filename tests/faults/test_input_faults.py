"""Hostile tables and image folders: each defect of issue 10 that lives in the inputs (1, 5, 6, 8-11)."""

import logging
import shlex
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from embed_helpers import embed, make_image_set
from PIL import Image
from test_cli import run_cli

from tagcons.data.images import ImageLoadError, load_rgb
from tagcons.data.pairs import load_pairs
from tagcons.embed import extractor
from tagcons.embed.backbones import load_backbone
from tagcons.embed.features import image_features
from tagcons.errors import BadInputError


def test_unlabelled_pairs_are_embedded_and_predicts_hint_works_as_written(tmp_path, capsys):
    pairs, images = make_image_set(tmp_path, n_images=10, tags_per_image=3)
    cache, run = tmp_path / "cache.h5", tmp_path / "run"
    assert run_cli(["embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", cache,
                    "--workers", "0", "-q"][:-1], capsys)[0] == 0  # fmt: skip
    assert run_cli(["fit-head", "--cache", cache, "--data", pairs, "--head", "threshold", "--out", run], capsys)[0] == 0
    Image.new("RGB", (40, 30), (9, 120, 200)).save(images / "new.png")
    new = tmp_path / "new.csv"
    new.write_text("Image Filename,Hashtag\nnew.png,#새것\nnew.png,바다\n", encoding="utf-8")
    predict = [
        "predict",
        "--run",
        run,
        "--cache",
        cache,
        "--data",
        new,
        "--out",
        tmp_path / "p.csv",
        "--images",
        images,
    ]
    code, _, err = run_cli(predict, capsys)
    assert code == 2 and "add them with: " in err
    hint = shlex.split(err.strip().split("add them with: ")[1])
    assert hint[:2] == ["tagcons", "embed"]
    code, _, err = run_cli([*hint[1:], "--workers", "0"], capsys)  # the hint, as written
    assert code == 0, err
    assert run_cli(predict, capsys)[0] == 0
    scored = pd.read_csv(tmp_path / "p.csv")
    assert len(scored) == 2 and "true" not in scored.columns


def _large_png(path, size=(3000, 2000)):
    """A photo-like large image: smooth gradients plus fine detail, saved as PNG."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    rgb = np.stack([x / size[0] * 255, y / size[1] * 255, 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)], axis=2)
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path, compress_level=1)
    return path


def test_large_images_reach_the_processor_reduced_and_features_barely_move(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    _large_png(images / "big.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("Image Filename,Hashtag,Score\nbig.png,#큰,3\n", encoding="utf-8")
    seen = []
    original = extractor.BatchPreprocessor.__call__

    def spy(self, batch):
        seen.extend(image.size for _, image, _ in batch if image is not None)
        return original(self, batch)

    monkeypatch.setattr(extractor.BatchPreprocessor, "__call__", spy)
    embed(pairs, images, tmp_path / "cache.h5")
    assert len(seen) == 1 and max(seen[0]) <= 8 * 64  # a few times the tiny model's 64-pixel input, not 3000

    from tagcons.data.images import reduced_side

    backbone = load_backbone("tiny")
    side = reduced_side(backbone.image_processor)
    assert seen == [(side * 3 // 2, side)]  # shorter side = REDUCE_FACTOR x the model's input side

    def features(image):
        pixels = backbone.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return image_features(backbone.model, pixels)[0].numpy()

    full, reduced = features(load_rgb(images / "big.png")), features(load_rgb(images / "big.png", min_side=side))
    relative = np.linalg.norm(full - reduced) / np.linalg.norm(full)
    cosine = full @ reduced / np.linalg.norm(full) / np.linalg.norm(reduced)
    assert relative < 1e-2 and cosine > 0.9999  # measured: relative 3.2e-3, cosine 0.999995 (tiny backbone)


def test_large_jpeg_is_decoded_reduced(tmp_path):
    path = tmp_path / "big.jpg"
    Image.open(_large_png(tmp_path / "big.png")).save(path, quality=90)
    assert load_rgb(path, min_side=4 * 224).size == (375, 250)  # 1/8 still covers a 224-pixel input
    assert load_rgb(path).size == (3000, 2000)


def test_photo_sized_jpeg_is_dct_scaled_to_cover_the_model_input_only(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.open(_large_png(tmp_path / "photo.png", size=(1080, 1080))).save(path, quality=90)
    assert load_rgb(path, min_side=4 * 224).size == (270, 270)  # 1/4: the processor resizes 270 -> 224
    assert load_rgb(path, min_side=4 * 300).size == (540, 540)  # 1/4 would not cover 300: 1/2


def test_nfd_file_names_are_found_under_an_nfc_key(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    name = "바다 사진.png"
    Image.new("RGB", (32, 32), (10, 80, 160)).save(images / unicodedata.normalize("NFD", name))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"Image Filename,Hashtag,Score\n{name},#바다,4\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="tagcons"):
        summary = embed(pairs, images, tmp_path / "cache.h5")
    assert summary.images_new == 1 and summary.images_failed == 0, summary.failures
    assert caplog.text.count("NFD") == 1  # once, though the file is hashed and then decoded


def test_parquet_score_column_of_lists_exits_2(tmp_path, capsys):
    table = pa.table(
        {"Image Filename": ["a.png"], "Hashtag": ["#x"], "Score": pa.array([[1, 2]], pa.list_(pa.int64()))}
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    (tmp_path / "images").mkdir()
    args = ["embed", "--data", tmp_path / "pairs.parquet", "--images", tmp_path / "images", "--backbone", "tiny"]
    code, _, err = run_cli([*args, "--out", tmp_path / "c.h5"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'Score'" in err, err


def test_nul_byte_in_an_image_path_exits_2(tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("Image Filename,Hashtag,Score\nok.png,#x,3\nbad\x00.png,#y,2\n", encoding="utf-8")
    (tmp_path / "images").mkdir()
    args = ["embed", "--data", pairs, "--images", tmp_path / "images", "--backbone", "tiny", "--out", tmp_path / "c"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "NUL" in err and "lines 3" in err, err
    assert "\x00" not in err


def test_demo_refuses_a_non_empty_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    import tagcons.demo

    monkeypatch.setattr(tagcons.demo, "make_demo_set", lambda *a, **k: pytest.fail("the demo started writing"))
    checkpoints = tmp_path / "mine" / "runs" / "finetune" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "weights.bin").write_bytes(b"precious")
    code, _, err = run_cli(["demo", "--out", tmp_path / "mine"], capsys)
    assert code == 2 and "not empty" in err and (checkpoints / "weights.bin").read_bytes() == b"precious"
    from tagcons.demo.pipeline import DEMO_MARKER, claim_output_folder

    claim_output_folder(tmp_path / "fresh")  # a new folder is taken and marked, a marked one reused
    claim_output_folder(tmp_path / "fresh")
    assert (tmp_path / "fresh" / DEMO_MARKER).is_file()
    (tmp_path / "old_demo" / "data").mkdir(parents=True)  # written before the marker existed
    (tmp_path / "old_demo" / "compare.md").write_text("| run |\n", encoding="utf-8")
    claim_output_folder(tmp_path / "old_demo")


def test_line_numbers_count_the_lines_of_a_quoted_multi_line_cell(tmp_path):
    pairs = tmp_path / "pairs.csv"
    rows = ['a.png,"#one\nline two\nline three",3', "b.png,#x,4", "c.png,#y,5", "d.png,#z,9"]
    pairs.write_text("Image Filename,Hashtag,Score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"outside 1-5 at lines 7\b"):  # physical line 7 holds d.png
        load_pairs(pairs)


def test_a_symlink_leaving_the_images_folder_fails_that_image_only(tmp_path):
    pairs, images = make_image_set(tmp_path, n_images=3, tags_per_image=1)
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(outside)
    (images / "link.png").symlink_to(outside)
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("link.png,#링크,2\n")
    summary = embed(pairs, images, tmp_path / "cache.h5")
    assert summary.images_new == 3 and "symlink" in summary.failures["link.png"]


def test_a_symlink_loop_inside_the_images_folder_fails_that_image_only(tmp_path):
    pairs, images = make_image_set(tmp_path, n_images=3, tags_per_image=1)
    (images / "loop_a.png").symlink_to(images / "loop_b.png")
    (images / "loop_b.png").symlink_to(images / "loop_a.png")
    (images / "self.png").symlink_to("self.png")
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write("loop_a.png,#고리,2\nself.png,#자기,3\n")
    summary = embed(pairs, images, tmp_path / "cache.h5")
    assert summary.images_new == 3
    assert all("symlink loop" in summary.failures[key] for key in ("loop_a.png", "self.png"))


def test_permission_error_is_named_as_such(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)  # chmod does not stop root, who may run the tests
    with pytest.raises(ImageLoadError) as failure:
        load_rgb(path)
    assert failure.value.reason.startswith("permission denied") and "corrupt" not in failure.value.reason


def test_heic_is_named_unsupported_with_the_fix(tmp_path):
    path = tmp_path / "IMG_0001.jpg"  # a phone's HEIC under a wrong extension: found by its header
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(ImageLoadError, match="HEIC/HEIF.*convert them to JPEG or PNG"):
        load_rgb(path)
