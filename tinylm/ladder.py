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

import os
from dataclasses import asdict, dataclass

from . import results

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
    for stage in STAGES:
        group = [r for r in rungs if r.stage == stage]
        if not group:
            continue
        ax.scatter([max(r.train_cpu_seconds, 0.01) for r in group], [r.test_bpc for r in group],
                   marker=markers[stage], s=50, label=stage)
        for r in group:
            ax.annotate(r.name, (max(r.train_cpu_seconds, 0.01), r.test_bpc),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training CPU-seconds (log scale)")
    ax.set_ylabel("test bits per character")
    ax.legend(title="stage")
    ax.grid(alpha=0.3)
    return ax
