"""The ladder: every model of the course scored in bits per character on the same test split.

Each rung records what the book needs to draw progress against compute: the model's name,
its stage (``baseline`` for compressors, then ``SLM``, ``NLM``, ``PLM``, ``LLM``), the corpus,
its test bpc, its parameter count, the CPU-seconds its training took, and the lab that
produced it.  Labs call :func:`record`; the book reads :func:`load`.  A test checks that
every rung's numbers are the ones its lab printed (see ``tests/test_ladder.py``).

Timings are not reproducible, so a rung whose checked values (bpc, parameters) are unchanged
keeps the CPU-seconds already on file; set ``TINYLM_UPDATE_TIMINGS=1`` to measure again.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from .. import results

NAME = "ladder"
STAGES = ("baseline", "SLM", "NLM", "PLM", "LLM")
BPC_DIGITS = 4
UPDATE_TIMINGS_ENV = "TINYLM_UPDATE_TIMINGS"


@dataclass(frozen=True)
class Rung:
    name: str
    stage: str
    corpus: str
    test_bpc: float
    parameters: int
    train_cpu_seconds: float
    lab: str
    description: str = ""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not self.test_bpc > 0:
            raise ValueError(f"test_bpc must be positive, got {self.test_bpc}")
        object.__setattr__(self, "test_bpc", round(float(self.test_bpc), BPC_DIGITS))
        object.__setattr__(self, "parameters", int(self.parameters))
        object.__setattr__(self, "train_cpu_seconds", round(float(self.train_cpu_seconds), 2))

    def checked(self) -> tuple:
        """The values that must reproduce exactly (everything but the timing)."""
        d = asdict(self)
        d.pop("train_cpu_seconds")
        return tuple(sorted(d.items()))


def load() -> list[Rung]:
    """All rungs on file, in the order they were first recorded."""
    try:
        data = results.load(NAME)
    except FileNotFoundError:
        return []
    return [Rung(**r) for r in data["rungs"]]


def record(*rungs: Rung) -> list[Rung]:
    """Add or update rungs (matched by name and corpus) and save the ladder."""
    on_file = load()
    update_timings = os.environ.get(UPDATE_TIMINGS_ENV, "") not in ("", "0")
    for rung in rungs:
        for i, old in enumerate(on_file):
            if (old.name, old.corpus) == (rung.name, rung.corpus):
                if old.checked() == rung.checked() and not update_timings:
                    rung = old
                on_file[i] = rung
                break
        else:
            on_file.append(rung)
    results.save(NAME, {"rungs": [asdict(r) for r in on_file]})
    return on_file


def format_table(rungs: list[Rung]) -> str:
    """A plain-text table of the checked values (no timings), best bpc first."""
    rows = sorted(rungs, key=lambda r: r.test_bpc)
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'rung':<{width}}  {'stage':<8}  {'corpus':<13}  {'test bpc':>8}  {'parameters':>12}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.stage:<8}  {r.corpus:<13}  {r.test_bpc:>8.3f}  {r.parameters:>12,}")
    return "\n".join(lines)


def plot(rungs: list[Rung], ax=None):
    """Test bpc against training CPU-seconds (log scale), one marker per stage."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax = ax or plt.subplots(figsize=(6.4, 4))[1]
    markers = dict(zip(STAGES, "sods^"))
    xs = {r: max(r.train_cpu_seconds, 0.01) for r in rungs}
    for stage in STAGES:
        group = [r for r in rungs if r.stage == stage]
        if group:
            ax.scatter([xs[r] for r in group], [r.test_bpc for r in group],
                       marker=markers[stage], s=50, label=stage)
    for r, (x, y, left) in _label_places(xs).items():
        ax.annotate(r.name, (xs[r], r.test_bpc), xytext=(x, y), textcoords="data", fontsize=8,
                    ha="right" if left else "left", va="center",
                    arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.6, shrinkA=0, shrinkB=4)
                    if abs(y - r.test_bpc) > 1e-9 else None)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training CPU-seconds (log scale)")
    ax.set_ylabel("test bits per character")
    ax.legend(title="stage")
    ax.grid(alpha=0.3)
    return ax


def _label_places(xs: dict) -> dict:
    """Where each rung's name goes, given ``{rung: its x}``: ``{rung: (x, y, to the left)}``, in
    data coordinates.

    A name sits just right of its marker (left of it for the right-most quarter of the log
    scale, so that it stays inside the axes), and names of rungs close together on the
    compute axis are pushed apart vertically so that they do not overlap.
    """
    if not xs:
        return {}
    logs = {r: math.log10(x) for r, x in xs.items()}
    low, high = min(logs.values()), max(logs.values())
    span = max(high - low, 1.0)
    bpcs = [r.test_bpc for r in xs]
    gap = 0.055 * max(max(bpcs) - min(bpcs), 0.2)  # about one line of 8-point text
    places, placed = {}, []
    for r in sorted(xs, key=lambda r: r.test_bpc):
        left = logs[r] > high - 0.25 * span
        shift = 10 ** ((-1 if left else 1) * 0.03 * span)
        y = r.test_bpc
        for other_log, other_y, other_left in placed:  # names already placed, lowest first
            if other_left == left and abs(other_log - logs[r]) < 0.45 * span and abs(other_y - y) < gap:
                y = other_y + gap
        placed.append((logs[r], y, left))
        places[r] = (xs[r] * shift, y, left)
    return places
