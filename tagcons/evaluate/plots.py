"""Confusion matrix and reliability diagram (Pillow), training curves (matplotlib's Agg backend, imported when
drawn: no display needed); both in the one style of `plot_style` (font, sizes, colours, frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.metrics import confusion_matrix

from tagcons.evaluate.plot_style import (
    COLOURS,
    FRAME_COLOUR,
    LABEL_PX,
    LEGEND_PX,
    REFERENCE_COLOUR,
    TICK_PX,
    TITLE_PX,
    styled_pyplot,
)
from tagcons.evaluate.plot_style import font as _font
from tagcons.labels import LABELS

CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_qwk")


def plot_confusion_matrix(y_true, y_pred, path: str | Path, title: str = "", labels=LABELS) -> Path:
    """Counts in the cells, colour by row-normalised share (recall per true score); one row per label.

    Drawn with Pillow in matplotlib's look (Blues, a colour bar): every run writes one, and matplotlib's
    import and layout would cost a threshold fit more than the fit itself.
    """
    counts = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), labels=list(labels))
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    canvas = Image.new("RGB", CONFUSION_SIZE, "white")
    draw = ImageDraw.Draw(canvas)
    box = _matrix_box(len(labels))
    _draw_cells(draw, box, counts, share)
    _draw_ticks(draw, box, [str(k) for k in labels])
    _draw_colour_bar(canvas, draw, box)
    return _labelled_png(canvas, draw, box, (title or "confusion matrix", "predicted score", "true score"), path)


# --- the confusion matrix in Pillow -------------------------------------------------------------------

CONFUSION_SIZE = (500, 440)  # matplotlib's 5 x 4.4 inches at 100 dpi
# ColorBrewer's Blues, the nine colours matplotlib's "Blues" interpolates between
BLUES = np.array(
    [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ],
    dtype=float,
)
BAR_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def blues(shares) -> np.ndarray:
    """Blues colours (uint8 RGB, one row per share) of shares in [0, 1]."""
    position = np.clip(np.asarray(shares, dtype=float), 0.0, 1.0) * (len(BLUES) - 1)
    return (
        np.stack([np.interp(position, np.arange(len(BLUES)), BLUES[:, c]) for c in range(3)], -1)
        .round()
        .astype(np.uint8)
    )


def _matrix_box(k: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the square matrix, room left for labels and the colour bar."""
    left, top, right, bottom = 70, 40, 390, 375
    side = min(right - left, bottom - top)
    return left, top, left + side, top + side


def _draw_cells(draw, box, counts: np.ndarray, share: np.ndarray) -> None:
    k = len(counts)
    cell = (box[2] - box[0]) / k
    for i in range(k):
        for j in range(k):
            x, y = box[0] + j * cell, box[1] + i * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=tuple(blues([share[i, j]])[0].tolist()))
            colour = "white" if share[i, j] > 0.5 else "black"
            _centred(draw, (x + cell / 2, y + cell / 2), str(counts[i, j]), _font(LABEL_PX), colour)
    draw.rectangle(box, outline=FRAME_COLOUR)


def _draw_ticks(draw, box, names: list[str]) -> None:
    cell = (box[2] - box[0]) / len(names)
    for index, name in enumerate(names):
        x, y = box[0] + (index + 0.5) * cell, box[1] + (index + 0.5) * cell
        _tick_marks(draw, box, (x, y), name)
        _centred(draw, (box[0] - 14, y), name, _font(TICK_PX))


def _tick_marks(draw, box, at: tuple[float, float], x_label: str) -> None:
    """Ticks at ``at``'s x below ``box`` and at its y left of it, ``x_label`` under the x tick."""
    x, y = at
    draw.line((x, box[3], x, box[3] + 4), fill="black")
    draw.line((box[0] - 4, y, box[0], y), fill="black")
    _centred(draw, (x, box[3] + 14), x_label, _font(TICK_PX))


def _draw_colour_bar(canvas, draw, box) -> None:
    left, top, bottom = box[2] + 22, box[1], box[3]
    height = int(bottom - top)
    gradient = blues(np.linspace(1.0, 0.0, height))  # top row: share 1
    canvas.paste(Image.fromarray(np.repeat(gradient[:, None, :], 18, axis=1)), (int(left), int(top)))
    draw.rectangle((left, top, left + 18, bottom), outline="black")
    for tick in BAR_TICKS:
        y = bottom - tick * (bottom - top)
        draw.line((left + 18, y, left + 22, y), fill="black")
        draw.text((left + 25, y), f"{tick:.1f}", fill="black", font=_font(TICK_PX), anchor="lm")
    _paste_vertical(canvas, "share of true score", (left + 68, (top + bottom) / 2), _font(LABEL_PX))


def _centred(draw, xy, text: str, font, colour="black") -> None:
    draw.text(xy, text, fill=colour, font=font, anchor="mm")


def _paste_vertical(canvas, text: str, centre, font) -> None:
    """``text`` rotated a quarter turn anticlockwise, centred on ``centre``."""
    left, top, right, bottom = font.getbbox(text)
    label = Image.new("RGBA", (int(right - left) + 4, int(bottom - top) + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2 - left, 2 - top), text, fill="black", font=font)
    label = label.rotate(90, expand=True)
    canvas.paste(label, (int(centre[0] - label.width / 2), int(centre[1] - label.height / 2)), label)


def plot_training_curves(history: dict, path: str | Path, title: str = "") -> Path:
    """Losses on the left axis, validation metrics on the right; any subset of CURVE_KEYS."""
    with styled_pyplot() as plt:
        from matplotlib.ticker import MaxNLocator

        fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.4))
        for key in ("train_loss", "val_loss"):
            if history.get(key):
                left.plot(np.arange(1, len(history[key]) + 1), history[key], label=key, marker="o", markersize=3)
        for key in ("val_accuracy", "val_macro_f1", "val_qwk"):
            if history.get(key):
                right.plot(np.arange(1, len(history[key]) + 1), history[key], label=key, marker="o", markersize=3)
        # Both losses are computed alike (eval mode, after each epoch), so their gap is over-fitting, not dropout.
        left.set(xlabel="epoch", ylabel="loss (eval mode, after the epoch)", title=title or "training curves")
        right.set(xlabel="epoch", ylabel="validation metric")
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
            if ax.lines:
                ax.legend(loc="best")
        return save_figure(plt, fig, path)


def plot_reliability(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy against top-label confidence per bin, one line per named curve.

    ``curves`` maps a label (e.g. "before (ECE 0.12)") to `calibration.reliability_bins` output. Drawn with
    Pillow in matplotlib's look, like the confusion matrix: every run of a head with probabilities writes one.
    """
    canvas = Image.new("RGB", RELIABILITY_SIZE, "white")
    draw = ImageDraw.Draw(canvas)
    box = RELIABILITY_BOX
    _draw_unit_axes(draw, box)
    _dashed(draw, [_at(box, 0, 0), _at(box, 1, 1)], REFERENCE_COLOUR)
    for colour, bins in zip(CURVE_COLOURS, curves.values()):
        points = [_at(box, b["confidence"], b["accuracy"]) for b in bins]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    _draw_legend(draw, box, [("perfect calibration", REFERENCE_COLOUR), *zip(curves, CURVE_COLOURS)])
    texts = (title or "reliability", "confidence (top score probability)", "accuracy")
    return _labelled_png(canvas, draw, box, texts, path)


def _labelled_png(canvas, draw, box, texts: tuple[str, str, str], path: str | Path) -> Path:
    """Saves ``canvas`` as PNG with ``texts`` (title, x label, y label) above, below and left of ``box``."""
    title, x_label, y_label = texts
    _centred(draw, ((box[0] + box[2]) / 2, box[1] - 16), title, _font(TITLE_PX))
    _centred(draw, ((box[0] + box[2]) / 2, box[3] + 36), x_label, _font(LABEL_PX))
    _paste_vertical(canvas, y_label, (box[0] - 48, (box[1] + box[3]) / 2), _font(LABEL_PX))
    path = Path(path)
    canvas.save(path, format="PNG")
    return path


# --- the reliability diagram in Pillow ----------------------------------------------------------------

RELIABILITY_SIZE = (480, 440)  # matplotlib's 4.8 x 4.4 inches at 100 dpi
RELIABILITY_BOX = (70, 40, 450, 380)  # (left, top, right, bottom) of the unit square
CURVE_COLOURS = COLOURS  # plot_style's, as in the matplotlib figures
UNIT_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def _at(box, x: float, y: float) -> tuple[float, float]:
    """Canvas position of (x, y) in the unit square drawn in ``box`` (y grows upwards)."""
    return box[0] + x * (box[2] - box[0]), box[3] - y * (box[3] - box[1])


def _draw_unit_axes(draw, box) -> None:
    draw.rectangle(box, outline=FRAME_COLOUR)
    for tick in UNIT_TICKS:
        x, y = _at(box, tick, tick)
        _tick_marks(draw, box, (x, y), f"{tick:.1f}")
        draw.text((box[0] - 7, y), f"{tick:.1f}", fill="black", font=_font(TICK_PX), anchor="rm")


def _dashed(draw, ends, colour, dash: float = 6.0) -> None:
    (x0, y0), (x1, y1) = ends
    n = max(1, int(np.hypot(x1 - x0, y1 - y0) / dash))
    for i in range(0, n, 2):
        a, b = i / n, min(i + 1, n) / n
        draw.line((x0 + a * (x1 - x0), y0 + a * (y1 - y0), x0 + b * (x1 - x0), y0 + b * (y1 - y0)), fill=colour)


def _draw_legend(draw, box, entries: list[tuple[str, str]]) -> None:
    """One line per (label, colour) in the upper left corner, in a framed white box."""
    left, top, row = box[0] + 8, box[1] + 8, 16
    width = max(draw.textlength(label, font=_font(LEGEND_PX)) for label, _ in entries) + 34
    draw.rectangle((left, top, left + width, top + row * len(entries) + 6), fill="white", outline="lightgrey")
    for index, (label, colour) in enumerate(entries):
        y = top + 11 + index * row
        draw.line((left + 6, y, left + 24, y), fill=colour, width=2)
        draw.text((left + 30, y), label, fill="black", font=_font(LEGEND_PX), anchor="lm")


def save_figure(plt, fig, path) -> Path:
    """Saves a matplotlib figure as PNG (``path``: a file path or a binary buffer) and closes it."""
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return Path(path) if isinstance(path, (str, Path)) else path
