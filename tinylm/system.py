"""What a run records about where it ran: the machine, its peak memory, and the code's commit.

A long run's log (see :mod:`tinylm.training.recipes`) and the lab bench both say which CPU and
which versions produced their numbers, so that a reader can tell a slower machine from slower
code; a checkpoint also names the commit of the code that made it.
"""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path

MB = 2**20


def cpu_name() -> str:
    """The CPU's name from ``/proc/cpuinfo`` (Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, str]:
    """The CPU and the versions of Python and torch (when torch is installed)."""
    from importlib import metadata

    info = {"cpu": cpu_name(), "python": platform.python_version()}
    try:
        info["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pass
    return info


def peak_memory_mb() -> float:
    """The largest resident memory this process has used so far, in MB.

    ``ru_maxrss`` is in kilobytes on Linux and in bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def code_commit(root: Path | None = None) -> dict[str, object]:
    """The git commit of the code in ``root`` (default: the course root) and whether the
    working tree had uncommitted changes: ``{"commit": "...", "dirty": bool}``, or
    ``{"commit": None}`` outside a git checkout."""
    if root is None:
        from .paths import course_root

        try:
            root = course_root()
        except FileNotFoundError:
            return {"commit": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": commit, "dirty": bool(status.strip())}
