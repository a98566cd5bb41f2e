"""Conceptual diagrams for the book, drawn by code: boxes, arrows and labels with matplotlib.

Every chapter has at least one picture of an idea rather than of a measurement (the n-gram
counter, an RNN unrolled, attention's queries, keys and values, pretrain → SFT → RLHF, RAG's
pipeline).  They are drawn here instead of in a drawing program so that they live in the
repository as text, use the book's fonts (Chinese included) and change with the code.

Two calls cover most diagrams:

* :func:`pipeline` draws steps left to right (or top to bottom) joined by arrows;
* :func:`diagram` places boxes where you say and joins the ones you name.

Both return the matplotlib ``Figure``; show it with ``plt.show()`` in a code cell whose
``mystnb`` metadata gives the caption and the alt text.

>>> fig = pipeline(["text", "tokens", "model", "next token"])
>>> len(fig.axes)
1
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from tinylm.analysis.plots import use_chinese_font

def _has_cjk(text: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)


PALETTE = ("#dbe9f6", "#fde2c8", "#d9f0d3", "#eadcf2", "#f6d5d5", "#fff2b3", "#e0e0e0")
"""Light fills that keep black labels readable (contrast above 4.5:1), cycled by default."""
FONT_SIZE = 11


@dataclass
class Box:
    """A labelled box centred at (x, y) in data units; ``color`` is a fill from :data:`PALETTE`."""

    x: float
    y: float
    label: str
    width: float = 1.6
    height: float = 0.7
    color: str | None = None


def _draw_box(ax, box: Box, color: str) -> None:
    ax.add_patch(FancyBboxPatch((box.x - box.width / 2, box.y - box.height / 2), box.width, box.height,
                                boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=box.color or color, edgecolor="#333333", linewidth=1.2))
    ax.text(box.x, box.y, box.label, ha="center", va="center", fontsize=FONT_SIZE, wrap=True)


def _edge_point(box: Box, towards: Box) -> tuple[float, float]:
    """Where the segment from ``box``'s centre towards ``towards`` leaves ``box``."""
    dx, dy = towards.x - box.x, towards.y - box.y
    if dx == 0 and dy == 0:
        return box.x, box.y
    scale = min(box.width / 2 / abs(dx) if dx else float("inf"),
                box.height / 2 / abs(dy) if dy else float("inf"))
    return box.x + dx * scale, box.y + dy * scale


def _draw_arrow(ax, start: Box, end: Box, label: str = "", curve: float = 0.0) -> None:
    a, b = _edge_point(start, end), _edge_point(end, start)
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, linewidth=1.3, color="#333333",
                                 connectionstyle=f"arc3,rad={curve}", shrinkA=2, shrinkB=2))
    if label:
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        ax.text(mx, my + 0.12 + abs(curve) * 0.8, label, ha="center", va="bottom", fontsize=FONT_SIZE - 2,
                color="#222222", bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.9))


def diagram(boxes: dict[str, Box], arrows=(), *, size: tuple[float, float] = (8, 3),
            title: str | None = None, notes=()) -> plt.Figure:
    """Draw ``boxes`` and ``arrows`` (``(from, to)`` or ``(from, to, label)`` or
    ``(from, to, label, curve)``); ``notes`` are ``(x, y, text)`` placed as plain text.

    Raises ``KeyError`` naming an arrow's unknown end, so a typo does not draw a dangling arrow.
    """
    texts = [b.label for b in boxes.values()] + [a[2] for a in arrows if len(a) > 2] + [n[2] for n in notes]
    # Text objects take their font when they are made, so the Chinese font is switched on only
    # while this figure is drawn: later figures of the page keep matplotlib's settings.
    with plt.rc_context():
        if any(_has_cjk(t) for t in texts + [title or ""]):
            use_chinese_font()
        return _draw(boxes, arrows, size, title, notes)


def _draw(boxes, arrows, size, title, notes) -> plt.Figure:
    fig, ax = plt.subplots(figsize=size)
    for i, box in enumerate(boxes.values()):
        _draw_box(ax, box, PALETTE[i % len(PALETTE)])
    for arrow in arrows:
        start, end, label, curve = (*arrow, "", 0.0)[:4] if len(arrow) == 2 else (*arrow, 0.0)[:4]
        for name in (start, end):
            if name not in boxes:
                raise KeyError(f"arrow {start!r} -> {end!r}: no box named {name!r}; boxes: {sorted(boxes)}")
        _draw_arrow(ax, boxes[start], boxes[end], label, curve)
    for x, y, text in notes:
        ax.text(x, y, text, ha="center", va="center", fontsize=FONT_SIZE - 1, color="#222222")
    xs = [b.x - b.width / 2 for b in boxes.values()] + [b.x + b.width / 2 for b in boxes.values()]
    ys = [b.y - b.height / 2 for b in boxes.values()] + [b.y + b.height / 2 for b in boxes.values()]
    xs += [x for x, _, _ in notes]
    ys += [y for _, y, _ in notes]
    ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3)
    ax.set_ylim(min(ys) - 0.4, max(ys) + 0.4)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=FONT_SIZE + 1)
    fig.tight_layout()
    return fig


def pipeline(steps, *, labels=(), vertical: bool = False, title: str | None = None,
             box_width: float = 1.7, gap: float = 0.7, size: tuple[float, float] | None = None) -> plt.Figure:
    """Steps joined by arrows in a row (or a column); ``labels[i]`` is written on arrow i."""
    steps = list(steps)
    if not steps:
        raise ValueError("a pipeline needs at least one step")
    step = box_width + gap if not vertical else 1.2
    boxes = {f"s{i}": Box(0 if vertical else i * step, -i * step if vertical else 0, text, width=box_width)
             for i, text in enumerate(steps)}
    arrows = [(f"s{i}", f"s{i + 1}", labels[i] if i < len(labels) else "") for i in range(len(steps) - 1)]
    if size is None:
        size = (2.2, 1.1 * len(steps) + 0.5) if vertical else (min(1.9 * len(steps) + 0.5, 11), 1.8)
    return diagram(boxes, arrows, size=size, title=title)
