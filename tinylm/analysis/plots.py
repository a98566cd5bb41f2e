"""Small helpers for figures: Chinese text, and attention maps.

Matplotlib's default font has no Chinese characters (they come out as empty boxes).
:func:`use_chinese_font` registers Noto Sans CJK, shipped in a pinned PyPI package (see
:func:`tinylm.data.cjk_font`), as a fallback after the default font, so English keeps its look
and Chinese is drawn.
"""

from __future__ import annotations

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


def attention_map(ax, weights, queries: Sequence[str], keys: Sequence[str] | None = None,
                  title: str = "", cmap: str = "viridis"):
    """Draw one attention matrix (queries as rows, keys as columns), labelled with the tokens."""
    weights = np.asarray(weights)
    keys = queries if keys is None else keys
    image = ax.imshow(weights, cmap=cmap, vmin=0.0, vmax=max(float(weights.max()), 1e-9), aspect="auto")
    ax.set_xticks(range(len(keys)), [show_token(k) for k in keys], fontsize=7)
    ax.set_yticks(range(len(queries)), [show_token(q) for q in queries], fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title, fontsize=9)
    return image
