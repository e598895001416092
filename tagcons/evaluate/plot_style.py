"""One look for every figure tagcons draws, with Pillow or with matplotlib: the same font (DejaVu Sans,
the font matplotlib ships), text sizes, colours, resolution and frame.

Pillow's own default font (Aileron) draws a space two pixels wide at 10 px, so legend entries read
"perfectcalibration" and "ECE0.093"; DejaVu Sans's space is a third of an em. The font file is found
without importing matplotlib (its import costs ~0.5 s), and Pillow's default stands in only where
matplotlib's data folder is missing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from pathlib import Path

from PIL import ImageFont

log = logging.getLogger(__name__)

DPI = 100  # every PNG: Pillow canvases are sized in pixels at this resolution, matplotlib figures saved at it
FONT_FAMILY = "DejaVu Sans"
FONT_FILE = ("mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
TITLE_PX, LABEL_PX, TICK_PX, LEGEND_PX = 14, 12, 11, 10
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")  # matplotlib's first colours, in every figure
REFERENCE_COLOUR = "grey"  # the perfect-calibration diagonal, baselines' reference lines
FRAME_COLOUR = "black"


@functools.cache
def font_path() -> Path | None:
    """DejaVu Sans from matplotlib's data folder, or None where matplotlib is not installed."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder).joinpath(*FONT_FILE)
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def font(size: int):
    """The figures' font at ``size`` pixels."""
    path = font_path()
    if path is not None:
        return ImageFont.truetype(str(path), size)
    log.warning("DejaVu Sans not found (matplotlib missing?): figures use Pillow's default font")
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def points(pixels: int) -> float:
    """A Pillow size in pixels as matplotlib points at DPI, so both draw text the same height."""
    return pixels * 72 / DPI


def matplotlib_rc() -> dict:
    """rcParams that make a matplotlib figure look like the Pillow ones."""
    from matplotlib import cycler

    return {
        "font.family": FONT_FAMILY,
        "font.size": points(LABEL_PX),
        "axes.titlesize": points(TITLE_PX),
        "axes.labelsize": points(LABEL_PX),
        "xtick.labelsize": points(TICK_PX),
        "ytick.labelsize": points(TICK_PX),
        "legend.fontsize": points(LEGEND_PX),
        "axes.prop_cycle": cycler(color=list(COLOURS)),
        "axes.edgecolor": FRAME_COLOUR,
        "axes.linewidth": 1.0,
        "axes.grid": False,
        "legend.edgecolor": "lightgrey",
        "legend.fancybox": False,
        "figure.facecolor": "white",
        "savefig.dpi": DPI,
        "figure.dpi": DPI,
    }


@contextlib.contextmanager
def styled_pyplot():
    """matplotlib's pyplot on the Agg backend (imported when a plot is drawn), inside the shared style;
    the caller's own rcParams are back in place afterwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(matplotlib_rc()):
        yield plt
