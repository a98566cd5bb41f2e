"""Small helpers for figures: Chinese text, and attention maps.

Matplotlib's default font has no Chinese characters (they come out as empty boxes).
:func:`use_chinese_font` registers Noto Sans CJK, shipped in a pinned PyPI package (see
:func:`tinylm.data.cjk_font`), as a fallback after the default font, so English keeps its look
and Chinese is drawn.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..data.packages import cjk_font


def use_chinese_font() -> str:
    """Let matplotlib draw Chinese; returns the font's family name."""
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    path = cjk_font()
    font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    # Matplotlib falls back from one font to the next only among those named in font.family.
    plt.rcParams["font.family"] = ["DejaVu Sans", name]
    plt.rcParams["axes.unicode_minus"] = False
    return name


def show_token(token: str) -> str:
    """A token as a figure label: whitespace made visible."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "→")


LABEL_FONT_MIN = 5.0
"""Smallest font (points) for a token label; fewer labels are written rather than smaller ones."""
LABEL_FONT_MAX = 11.0
"""Largest font (points) for a token label, however few the tokens."""
LABEL_ROOM = (0.6, 0.9)
"""Inches of a panel's width (tick labels, axis label) and height (the same, and the title)."""


def _label_layout(n: int, length_points: float) -> tuple[float, int]:
    """Font size and step for ``n`` labels along ``length_points`` of axis.

    Each label gets ``length_points / n`` points (its pitch); the font is 95% of the pitch, kept
    between :data:`LABEL_FONT_MIN` and :data:`LABEL_FONT_MAX`.  When even the smallest font does not
    fit, only every ``step``-th label is written, so labels never overlap.
    """
    pitch = length_points / max(n, 1)
    if pitch <= 0:
        return LABEL_FONT_MIN, max(n, 1)
    step = max(1, math.ceil(LABEL_FONT_MIN / (0.95 * pitch)))
    size = min(LABEL_FONT_MAX, max(LABEL_FONT_MIN, 0.95 * pitch * step))
    return round(size, 1), step


def _panel_points(ax) -> tuple[float, float]:
    """Width and height (points) the axes will have once the figure is laid out.

    Measured when the labels are set, i.e. usually before ``tight_layout`` grows the axes: the
    larger of the axes' present size and its share of the figure (its cell of the subplot grid,
    less :data:`LABEL_ROOM`).
    """
    width_in, height_in = ax.figure.get_size_inches()
    box = ax.get_position()
    width, height = box.width * width_in, box.height * height_in
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is not None:
        rows, cols = spec.get_geometry()[:2]
        r0, r1 = spec.rowspan.start, spec.rowspan.stop
        c0, c1 = spec.colspan.start, spec.colspan.stop
        width = max(width, (c1 - c0) * width_in / cols - LABEL_ROOM[0])
        height = max(height, (r1 - r0) * height_in / rows - LABEL_ROOM[1])
    return 72 * width, 72 * height


def attention_map(ax, weights, queries: Sequence[str], keys: Sequence[str] | None = None,
                  title: str = "", cmap: str = "viridis"):
    """Draw one attention matrix (queries as rows, keys as columns), labelled with the tokens.

    Labels stay readable: the font size follows the room each token has on the axes (95% of the
    space between two ticks, from 5 to 11 points), key labels longer than one character are
    rotated 90 degrees so they do not run into each other, and when the tokens are too many for
    a 5-point font only every second (third, ...) token is labelled.  Whitespace is made visible
    (:func:`show_token`).

    Figure size: give each token about 0.1 inch (7 points) along each axis of its panel, plus
    about 1 inch for the labels and title, e.g. ``figsize=(5.5, 5.5)`` for one 43-character line,
    or ``(5 * columns, 5 * rows)`` for a grid of 40-token panels.  A grid whose panels are
    smaller gets small (at least 5 points) or thinned labels: fine in an SVG the reader can zoom,
    not on paper.  Call it after ``plt.subplots`` (it measures the axes) and before
    ``plt.tight_layout``.
    """
    weights = np.asarray(weights)
    keys = queries if keys is None else keys
    image = ax.imshow(weights, cmap=cmap, vmin=0.0, vmax=max(float(weights.max()), 1e-9), aspect="auto")
    width, height = _panel_points(ax)
    key_labels = [show_token(k) for k in keys]
    query_labels = [show_token(q) for q in queries]
    x_size, x_step = _label_layout(len(key_labels), width)
    y_size, y_step = _label_layout(len(query_labels), height)
    rotate = any(len(label) > 1 for label in key_labels)
    x_ticks = list(range(0, len(key_labels), x_step))
    y_ticks = list(range(0, len(query_labels), y_step))
    ax.set_xticks(x_ticks, [key_labels[i] for i in x_ticks], fontsize=x_size, rotation=90 if rotate else 0)
    ax.set_yticks(y_ticks, [query_labels[i] for i in y_ticks], fontsize=y_size)
    ax.tick_params(length=2, pad=1.5)
    ax.set_xlabel("key (attended to)", fontsize=10)
    ax.set_ylabel("query (attending)", fontsize=10)
    if title:
        ax.set_title(title, fontsize=10)
    return image
