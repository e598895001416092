import numpy as np
import pytest
from PIL import Image

from tagcons.data.images import ImageLoadError, check_image_keys, load_rgb, resolve_image_path, to_rgb
from tagcons.errors import BadInputError


def _save(tmp_path, name, image, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "L", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new("RGB", (6, 4), (200, 30, 30)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (6, 4)


def test_sixteen_bit_greyscale_keeps_its_brightness(tmp_path):
    path = _save(tmp_path, "deep.png", Image.fromarray(np.full((4, 4), 32896, np.uint16)))
    assert load_rgb(path).getpixel((0, 0)) == (128, 128, 128)  # a plain convert would clip to 255


def test_transparency_composited_on_white():
    transparent = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    path = _save(tmp_path, "rot.jpg", image, exif=exif)
    assert load_rgb(path).size == (20, 40)


def test_first_frame_of_animation(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    red, green, _ = load_rgb(path).getpixel((0, 0))
    assert red > 200 and green < 50


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"not an image at all", "not an image"), (None, "file not found")],
)
def test_broken_files_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason):
        load_rgb(path, "bad.png")


def test_truncated_image_is_a_failure_not_a_crash(tmp_path):
    path = _save(tmp_path, "full.png", Image.effect_noise((64, 64), 50).convert("RGB"))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_rgb(path)


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    import tagcons.data.images as images

    path = _save(tmp_path, "big.png", Image.new("RGB", (100, 100)))
    monkeypatch.setattr(images.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(path)


def test_paths_stay_under_root(tmp_path):
    (tmp_path / "sub").mkdir()
    assert resolve_image_path(tmp_path, "sub/a.png") == (tmp_path / "sub" / "a.png").resolve()
    for bad in ["../a.png", "sub/../../a.png", "/etc/passwd"]:
        with pytest.raises(BadInputError, match="absolute|escapes"):
            resolve_image_path(tmp_path, bad)
    with pytest.raises(BadInputError, match="images folder not found"):
        check_image_keys(tmp_path / "missing", ["a.png"])
