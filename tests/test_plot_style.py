"""One look for every figure (evaluate/plot_style.py): the Pillow plots' text keeps its spaces, and the
Pillow and matplotlib figures share one font face."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from tagcons.evaluate import plot_style
from tagcons.evaluate.plots import _font  # the helper every Pillow plot draws its text with

SPACED = ("perfect calibration", "before (ECE 0.093)")


def _ink_width(text: str, size: int) -> int:
    canvas = Image.new("L", (600, 60), 0)
    ImageDraw.Draw(canvas).text((10, 10), text, fill=255, font=_font(size))
    left, _, right, _ = canvas.getbbox()
    return right - left


@pytest.mark.parametrize("text", SPACED)
@pytest.mark.parametrize("size", [plot_style.LEGEND_PX, plot_style.TICK_PX])
def test_drawn_words_keep_a_visible_space(text, size):
    """Pillow's default font drew a 2-pixel space at 10 px ("perfectcalibration"); a space is a quarter em at least."""
    joined = text.replace(" ", "")
    gaps = text.count(" ")
    assert _ink_width(text, size) - _ink_width(joined, size) >= gaps * 0.25 * size


def test_pillow_and_matplotlib_figures_share_one_font():
    path = plot_style.font_path()
    assert path is not None and path.name == "DejaVuSans.ttf"  # matplotlib is a core dependency
    assert _font(12).getname()[0] == plot_style.FONT_FAMILY == plot_style.matplotlib_rc()["font.family"]
    assert plot_style.matplotlib_rc()["axes.labelsize"] == pytest.approx(plot_style.LABEL_PX * 72 / plot_style.DPI)


def test_a_styled_figure_leaves_the_callers_matplotlib_settings_alone(tmp_path):
    import matplotlib.pyplot as plt

    from tagcons.evaluate.plots import plot_training_curves

    before = plt.rcParams["font.size"]
    plot_training_curves({"train_loss": [1.0, 0.5]}, tmp_path / "curves.png")
    assert plt.rcParams["font.size"] == before
