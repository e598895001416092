"""How a demo image is drawn (`draw_image`): what it shows (`ImageSpec`) painted with PIL.

The scene fills the background, one large object in the object colour sits near the centre, and some
images carry a white label of text-like marks; large flat colour regions, so that even a randomly
initialised encoder sees them. `tagcons.demo.dataset` chooses what each image shows and scores the hashtags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOUR_RGB = {
    "빨강": (220, 30, 30),
    "주황": (245, 130, 20),
    "노랑": (245, 215, 30),
    "초록": (40, 170, 60),
    "파랑": (30, 70, 220),
    "보라": (130, 50, 180),
    "검정": (20, 20, 20),
    "하양": (245, 245, 245),
}


@dataclass(frozen=True)
class ImageSpec:
    """What one demo image shows; the scoring rule reads only these fields."""

    filename: str
    scene: str
    colour: str
    shape: str
    has_text: bool


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int = 12) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def draw_image(spec: ImageSpec, size: int, rng: np.random.Generator) -> Image.Image:
    """Scene background, then the object, then (sometimes) a text label."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    SCENE_PAINTERS[spec.scene](draw, size, rng)
    centre = size / 2 + rng.uniform(-0.06, 0.06, size=2) * size
    radius = size * rng.uniform(0.30, 0.36)
    SHAPE_PAINTERS[spec.shape](draw, centre, radius, _jitter(COLOUR_RGB[spec.colour], rng))
    if spec.has_text:
        _draw_text_marks(draw, size, rng)
    return image


def _gradient(draw: ImageDraw.ImageDraw, size: int, top: tuple, bottom: tuple, y0: int = 0) -> None:
    for y in range(y0, size):
        t = (y - y0) / max(1, size - 1 - y0)
        draw.line([(0, y), (size, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))


def _paint_sea(draw, size, rng):
    horizon = int(size * 0.45)
    draw.rectangle([0, 0, size, horizon], fill=_jitter((170, 210, 240), rng))
    draw.rectangle([0, horizon, size, size], fill=_jitter((25, 75, 170), rng))
    step = size // 6
    for row, y in enumerate(range(horizon + step // 2, size, step // 2 + 4)):
        for x in range(-step + (row % 2) * step // 2, size, step):
            draw.arc([x, y, x + step, y + step // 2], 200, 340, fill=(235, 245, 255), width=max(1, size // 75))


def _paint_sky(draw, size, rng):
    _gradient(draw, size, _jitter((110, 170, 235), rng), _jitter((190, 225, 250), rng))
    for _ in range(3):
        x, y = rng.uniform(0, 0.8) * size, rng.choice([0.02, 0.75]) * size
        draw.ellipse([x, y, x + size * 0.3, y + size * 0.16], fill=(250, 250, 252))


def _paint_night(draw, size, rng):
    draw.rectangle([0, 0, size, size], fill=_jitter((12, 14, 35), rng, 8))
    x, y = rng.uniform(0.04, 0.16, size=2) * size
    draw.ellipse([x, y, x + size * 0.16, y + size * 0.16], fill=(240, 230, 150))


def _paint_forest(draw, size, rng):
    draw.rectangle([0, 0, size, size], fill=_jitter((35, 120, 45), rng))
    for i in range(6):
        x, top = (i + rng.uniform(0, 0.5)) * size / 6, (0.0 if i % 2 else 0.62) * size
        draw.polygon(
            [(x, top), (x - size * 0.09, top + size * 0.28), (x + size * 0.09, top + size * 0.28)], fill=(15, 70, 25)
        )
        draw.rectangle([x - size * 0.015, top + size * 0.28, x + size * 0.015, top + size * 0.36], fill=(90, 60, 30))


def _paint_sunset(draw, size, rng):
    _gradient(draw, size, _jitter((250, 160, 60), rng), _jitter((235, 95, 40), rng))
    x = rng.uniform(0.0, 0.15) * size
    draw.pieslice([x, size * 0.78, x + size * 0.3, size * 1.08], 180, 360, fill=(255, 215, 90))


def _paint_snow(draw, size, rng):
    draw.rectangle([0, 0, size, size], fill=_jitter((238, 242, 248), rng, 6))
    r = max(1, size // 90)
    for x, y in rng.uniform(0, size, size=(40, 2)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(175, 188, 205))


SCENE_PAINTERS = {
    "바다": _paint_sea,
    "하늘": _paint_sky,
    "밤": _paint_night,
    "숲": _paint_forest,
    "노을": _paint_sunset,
    "눈": _paint_snow,
}


def _star_points(centre, radius, points=5, inner=0.5):
    cx, cy = centre
    out = []
    for i in range(2 * points):
        r, angle = radius * (1 if i % 2 == 0 else inner), -math.pi / 2 + i * math.pi / points
        out.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return out


def _paint_circle(draw, c, r, fill):
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


def _paint_square(draw, c, r, fill):
    draw.rectangle([c[0] - 0.9 * r, c[1] - 0.9 * r, c[0] + 0.9 * r, c[1] + 0.9 * r], fill=fill)


def _paint_triangle(draw, c, r, fill):
    draw.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + 0.8 * r), (c[0] + r, c[1] + 0.8 * r)], fill=fill)


def _paint_star(draw, c, r, fill):
    draw.polygon(_star_points(c, r * 1.1), fill=fill)


def _paint_stripes(draw, c, r, fill):
    # Seven bands, four in the object colour: the colour still covers most of the object's box.
    top, height = c[1] - 0.95 * r, 1.9 * r / 7
    for band in range(0, 7, 2):
        y = top + band * height
        draw.rectangle([c[0] - 0.95 * r, y, c[0] + 0.95 * r, y + height], fill=fill)


SHAPE_PAINTERS = {
    "동그라미": _paint_circle,
    "네모": _paint_square,
    "세모": _paint_triangle,
    "별": _paint_star,
    "줄무늬": _paint_stripes,
}


def _draw_text_marks(draw, size, rng):
    """A white label with rows of dark dashes: text-like marks without depending on any font."""
    left, top, right, bottom = 0.08 * size, 0.82 * size, 0.92 * size, 0.97 * size
    draw.rectangle([left, top, right, bottom], fill=(250, 250, 250), outline=(30, 30, 30))
    glyph_h = (bottom - top) / 4
    for row in range(2):
        y, x = top + glyph_h * (0.7 + 1.6 * row), left + 0.03 * size
        while x < right - 0.05 * size:
            width = rng.uniform(0.01, 0.035) * size
            draw.rectangle([x, y, x + width, y + glyph_h], fill=(25, 25, 25))
            x += width + rng.uniform(0.01, 0.03) * size
