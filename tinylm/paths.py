"""Where the course lives on disk.

Labs run with their own folder as working directory, chapters with theirs, and the
grader in a temporary folder, so nothing may rely on the working directory.  The course
root is the folder holding ``_toc.yml`` and ``tinylm/``; set ``TINYLM_ROOT`` to choose it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "TINYLM_ROOT"


def _is_root(path: Path) -> bool:
    return (path / "_toc.yml").is_file() and (path / "tinylm").is_dir()


def course_root(start: str | os.PathLike | None = None) -> Path:
    """Return the course root, or raise ``FileNotFoundError`` saying how to set it."""
    env = os.environ.get(ROOT_ENV)
    if env:
        path = Path(env).resolve()
        if not _is_root(path):
            raise FileNotFoundError(f"{ROOT_ENV}={env} is not the course root (no _toc.yml and tinylm/ there)")
        return path
    candidates = [Path(start or Path.cwd()).resolve()]
    candidates.append(Path(__file__).resolve().parent.parent)
    for first in candidates:
        for path in (first, *first.parents):
            if _is_root(path):
                return path
    raise FileNotFoundError(
        "cannot find the course root (the folder with _toc.yml and tinylm/): "
        f"run from inside the course or set {ROOT_ENV}"
    )


def results_dir() -> Path:
    """``results/``: the small result files labs write and chapters read."""
    return course_root() / "results"


def checkpoints_dir() -> Path:
    """``checkpoints/``: the committed checkpoints of long runs (see :mod:`tinylm.checkpoint`)."""
    return course_root() / "checkpoints"
