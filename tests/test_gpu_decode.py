"""`embed --decode gpu` on the CPU: a PIL stand-in for torchvision's decode_jpeg (same signature) checks
batching, fallback and ordering; nvJPEG itself cannot be exercised without a GPU."""

import io

import numpy as np
import pytest
import torch
from embed_helpers import cache_contents, embed
from PIL import Image, ImageOps
from test_cli import run_cli

from tagcons.data.images import load_rgb
from tagcons.embed import gpu_decode
from tagcons.embed.backbones import load_backbone
from tagcons.embed.extractor import BatchPreprocessor


class PilBatchDecoder:
    """decode_jpeg's contract on the CPU: a list of byte tensors in, RGB uint8 [3, H, W] out, or raise."""

    def __init__(self):
        self.calls = []

    def __call__(self, datas, device):
        self.calls.append(len(datas))
        return [self._one(data).to(device) for data in datas]

    @staticmethod
    def _one(data: torch.Tensor) -> torch.Tensor:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def _photo(size, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    base = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(80, 255, size=3)
    return Image.fromarray(np.clip(base + rng.normal(0, 8, (size[1], size[0], 3)), 0, 255).astype(np.uint8))


def _mixed_folder(tmp_path):
    """JPEGs of several sizes, a PNG, a corrupt JPEG (JPEG magic, garbage after) and a missing file."""
    images = tmp_path / "images"
    images.mkdir()
    names = []
    for i, size in enumerate([(300, 200), (120, 160), (640, 480), (90, 90), (500, 260)]):
        _photo(size, i).save(images / f"photo_{i}.jpg", quality=90)
        names.append(f"photo_{i}.jpg")
    _photo((100, 80), 9).save(images / "drawing.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 200)
    names += ["drawing.png", "corrupt.jpg", "missing.jpg"]
    pairs = tmp_path / "pairs.csv"
    rows = [f"{name},#태그{i % 3},{1 + i % 5}" for i, name in enumerate(names)]
    pairs.write_text("Image Filename,Hashtag,Score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images, names


@pytest.fixture
def stand_in(monkeypatch):
    decoder = PilBatchDecoder()
    monkeypatch.setattr(gpu_decode, "load_batch_decoder", lambda device: decoder)
    return decoder


def test_mixed_folder_gives_the_cpu_paths_keys_failures_and_close_features(tmp_path, stand_in):
    pairs, images, _ = _mixed_folder(tmp_path)
    cpu_summary = embed(pairs, images, tmp_path / "cpu.h5")
    gpu_summary = embed(pairs, images, tmp_path / "gpu.h5", decode="gpu")
    cpu, gpu = cache_contents(tmp_path / "cpu.h5"), cache_contents(tmp_path / "gpu.h5")
    assert sorted(gpu["images"]) == sorted(cpu["images"]) and len(cpu["images"]) == 6
    assert gpu["failed"] == cpu["failed"] and sorted(cpu["failed"]) == ["corrupt.jpg", "missing.jpg"]
    assert gpu_summary.failures == cpu_summary.failures
    assert stand_in.calls[0] == 4  # batch_size 4: the first batch's four JPEGs decoded in one call
    for key in cpu["images"]:
        a, b = cpu["images"][key], gpu["images"][key]
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999, key


def test_batch_keeps_the_key_order_and_routes_non_jpegs_and_bad_jpegs_to_the_cpu(tmp_path):
    _, images, names = _mixed_folder(tmp_path)
    backbone = load_backbone("tiny")
    decoder = PilBatchDecoder()
    batches = gpu_decode.DeviceBatches(
        images,
        names,
        decoder,
        gpu_decode.DevicePreprocess.from_processor(backbone.image_processor, torch.device("cpu")),
        BatchPreprocessor(backbone.image_processor),
        None,
        torch.device("cpu"),
        torch.float32,
        batch_size=8,
        workers=0,
    )
    order = [5, 0, 6, 7, 1, 2]  # png, jpeg, corrupt jpeg, missing, jpeg, jpeg
    batch = [(index, (images / names[index]).read_bytes() if index != 7 else None) for index in order]
    indices, pixels, failed = batches.decode_batch(batch)
    assert indices == [5, 0, 1, 2] and pixels.shape[0] == 4
    assert sorted(index for index, _ in failed) == [6, 7]
    assert decoder.calls == [4, 1, 1, 1, 1]  # the corrupt JPEG fails the batch call: retried one by one
    png = BatchPreprocessor(backbone.image_processor)([(5, load_rgb(images / "drawing.png"), None)])[1][0]
    assert torch.equal(pixels[0], png)  # the PNG went through today's CPU path unchanged


def test_device_preprocessing_matches_the_processor(tmp_path):
    processor = load_backbone("tiny").image_processor
    image = _photo((333, 217), 3)
    expected = torch.as_tensor(np.asarray(processor(images=[image], return_tensors="np")["pixel_values"]))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    got = gpu_decode.DevicePreprocess.from_processor(processor, torch.device("cpu"))([tensor], torch.float32)
    assert got.shape == expected.shape
    # torch's antialiased bicubic is PIL's kernel; 8-bit rounding differs by at most a level or two
    assert (got - expected).abs().max() < 0.1 and (got - expected).abs().mean() < 0.01


def test_gpu_decode_without_cuda_is_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    pairs, images, _ = _mixed_folder(tmp_path)
    monkeypatch.setattr("tagcons.embed.extractor.load_backbone", lambda *a: pytest.fail("model loaded"))
    code, _, err = run_cli(
        [
            "embed",
            "--data",
            pairs,
            "--images",
            images,
            "--backbone",
            "tiny",
            "--out",
            tmp_path / "c.h5",
            "--decode",
            "gpu",
        ],
        capsys,
    )
    assert code == 2 and "--decode gpu needs a CUDA device" in err and "Traceback" not in err


def test_gpu_decode_is_part_of_the_fingerprint(tmp_path, stand_in):
    pairs, images, _ = _mixed_folder(tmp_path)
    embed(pairs, images, tmp_path / "gpu.h5", decode="gpu")
    import tagcons.cache

    with tagcons.cache.open(tmp_path / "gpu.h5") as cache:
        assert cache.settings["image_decode"] == "gpu"
