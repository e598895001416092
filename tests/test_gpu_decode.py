"""`embed --decode gpu` on the CPU: batching, fallback and ordering with two batch decoders of the same
signature, a Pillow stand-in (runs everywhere) and torchvision's own `decode_jpeg` on CPU tensors (runs
where a torchvision built for the installed torch is present: `make test-decode`). nvJPEG itself
needs a GPU and is not exercised here."""

import io
import os

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
from tagcons.errors import BadInputError

# `make test-decode` sets it: there a missing torchvision fails these tests instead of skipping them.
REQUIRE_TORCHVISION = "TAGCONS_REQUIRE_TORCHVISION"


def pil_decode(datas, device):
    """decode_jpeg's contract on the CPU: a list of byte tensors in, RGB uint8 [3, H, W] out, or raise."""
    return [_pil_one(data).to(device) for data in datas]


def _pil_one(data: torch.Tensor) -> torch.Tensor:
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def real_decode():
    """The production decoder (`torchvision.io.decode_jpeg`), to be run on CPU tensors."""
    try:
        return gpu_decode.torchvision_decoder()
    except BadInputError as e:
        if os.environ.get(REQUIRE_TORCHVISION) == "1":
            pytest.fail(f"torchvision must load under make test-decode: {e}")
        pytest.skip("needs a torchvision built for this torch: `make test-decode` runs it")


class CountingDecoder:
    """Wraps a batch decoder and records the length of every list it was given."""

    def __init__(self, decode):
        self.decode, self.calls = decode, []

    def __call__(self, datas, device):
        self.calls.append(len(datas))
        return self.decode(datas, device)


@pytest.fixture(params=["pillow", "torchvision"])
def decoder(request):
    return CountingDecoder(pil_decode if request.param == "pillow" else real_decode())


@pytest.fixture
def on_cpu(monkeypatch, decoder):
    """`--decode gpu` with the CUDA gate lifted: the batch decoder runs on CPU tensors."""
    monkeypatch.setattr(gpu_decode, "load_batch_decoder", lambda device: decoder)
    return decoder


def _photo(size, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    base = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(80, 255, size=3)
    return Image.fromarray(np.clip(base + rng.normal(0, 8, (size[1], size[0], 3)), 0, 255).astype(np.uint8))


def _jpeg_variants(images):
    """JPEGs that are not plain baseline RGB: greyscale, CMYK, progressive, rotated by EXIF orientation."""
    photo = _photo((260, 180), 7)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # stored landscape, shown portrait
    photo.convert("L").save(images / "grey.jpg", quality=90)
    photo.convert("CMYK").save(images / "cmyk.jpg", quality=90)
    photo.save(images / "progressive.jpg", quality=90, progressive=True)
    photo.save(images / "rotated.jpg", quality=90, exif=rotated.tobytes())
    return ["grey.jpg", "cmyk.jpg", "progressive.jpg", "rotated.jpg"]


def _mixed_folder(tmp_path):
    """JPEGs of several sizes and kinds, a PNG, two broken JPEGs (garbage after the magic, cut in half)
    and a missing file."""
    images = tmp_path / "images"
    images.mkdir()
    names = []
    for i, size in enumerate([(300, 200), (120, 160), (640, 480), (90, 90), (500, 260)]):
        _photo(size, i).save(images / f"photo_{i}.jpg", quality=90)
        names.append(f"photo_{i}.jpg")
    names += _jpeg_variants(images)
    _photo((100, 80), 9).save(images / "drawing.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 200)
    whole = (images / "photo_2.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    names += ["drawing.png", "corrupt.jpg", "truncated.jpg", "missing.jpg"]
    pairs = tmp_path / "pairs.csv"
    rows = [f"{name},#태그{i % 3},{1 + i % 5}" for i, name in enumerate(names)]
    pairs.write_text("Image Filename,Hashtag,Score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images, names


def test_mixed_folder_gives_the_cpu_paths_keys_failures_and_close_features(tmp_path, on_cpu):
    pairs, images, _ = _mixed_folder(tmp_path)
    cpu_summary = embed(pairs, images, tmp_path / "cpu.h5")
    gpu_summary = embed(pairs, images, tmp_path / "gpu.h5", decode="gpu")
    cpu, gpu = cache_contents(tmp_path / "cpu.h5"), cache_contents(tmp_path / "gpu.h5")
    assert sorted(gpu["images"]) == sorted(cpu["images"]) and len(cpu["images"]) == 10
    assert gpu["failed"] == cpu["failed"] and sorted(cpu["failed"]) == ["corrupt.jpg", "missing.jpg", "truncated.jpg"]
    assert gpu_summary.failures == cpu_summary.failures
    assert on_cpu.calls[0] == 4  # batch_size 4: the first batch's four JPEGs decoded in one call
    for key in cpu["images"]:
        a, b = cpu["images"][key], gpu["images"][key]
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999, key  # the fingerprint rule: < 1e-3 apart


def _device_batches(images, names, decoder, batch_size=8):
    processor = load_backbone("tiny").image_processor
    cpu = torch.device("cpu")
    preprocess = gpu_decode.DevicePreprocess.from_processor(processor, cpu)
    return gpu_decode.DeviceBatches(
        images, names, decoder, preprocess, BatchPreprocessor(processor), None, cpu, torch.float32, batch_size, 0
    )


def test_batch_keeps_the_key_order_and_routes_non_jpegs_and_bad_jpegs_to_the_cpu(tmp_path, decoder):
    _, images, names = _mixed_folder(tmp_path)
    batches = _device_batches(images, names, decoder)
    index = {name: i for i, name in enumerate(names)}
    order = [index[name] for name in ["drawing.png", "photo_0.jpg", "corrupt.jpg", "missing.jpg", "photo_1.jpg"]]
    order += [index[name] for name in ["truncated.jpg", "cmyk.jpg"]]
    missing = index["missing.jpg"]
    batch = [(i, (images / names[i]).read_bytes() if i != missing else None) for i in order]
    indices, pixels, failed = batches.decode_batch(batch)
    assert indices == [order[0], order[1], order[4], order[6]] and pixels.shape[0] == 4
    assert sorted(i for i, _ in failed) == sorted([index["corrupt.jpg"], missing, index["truncated.jpg"]])
    assert decoder.calls == [5, 1, 1, 1, 1, 1]  # the broken JPEGs fail the batch call: retried one by one
    processor = load_backbone("tiny").image_processor
    png = BatchPreprocessor(processor)([(0, load_rgb(images / "drawing.png"), None)])[1][0]
    assert torch.equal(pixels[0], png)  # the PNG went through today's CPU path unchanged


def test_batches_follow_the_keys_across_batches(tmp_path, decoder):
    _, images, names = _mixed_folder(tmp_path)
    yielded = list(_device_batches(images, names, decoder, batch_size=3))
    encoded = [i for indices, _, _ in yielded for i in indices]
    failed = [i for _, _, bad in yielded for i, _ in bad]
    assert sorted(encoded + failed) == list(range(len(names)))
    assert encoded == sorted(encoded)  # rows come out in the keys' order
    assert [names[i] for i in failed] == ["corrupt.jpg", "truncated.jpg", "missing.jpg"]


def test_torchvision_decodes_every_kind_of_jpeg_as_pillow_does(tmp_path):
    """decode_jpeg (CPU) gives Pillow's full-decode pixels: the GPU path differs from the processor's
    reference only by its resize (and, on a GPU, by nvJPEG)."""
    decode = real_decode()
    images = tmp_path
    names = _jpeg_variants(images) + ["photo.jpg"]
    _photo((333, 217), 5).save(images / "photo.jpg", quality=85)
    datas = [torch.frombuffer(bytearray((images / name).read_bytes()), dtype=torch.uint8) for name in names]
    for name, decoded in zip(names, decode(datas, torch.device("cpu"))):
        expected = torch.from_numpy(np.asarray(load_rgb(images / name)).copy()).permute(2, 0, 1)
        assert torch.equal(decoded, expected), name


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


def test_a_cache_written_with_decode_cpu_is_resumed_by_decode_gpu(tmp_path, on_cpu):
    """The decode mode is not part of the fingerprint: the modes' features differ by a cosine distance
    below 1e-4 (benchmarks/decode_modes.py), so a --decode gpu run reuses --decode cpu rows."""
    pairs, images, _ = _mixed_folder(tmp_path)
    embed(pairs, images, tmp_path / "cache.h5")
    summary = embed(pairs, images, tmp_path / "cache.h5", decode="gpu")
    assert (summary.images_cached, summary.images_new, summary.images_failed) == (10, 0, 3)
    assert on_cpu.calls == []  # nothing was decoded again
