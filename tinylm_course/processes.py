"""Child processes of the course's tools: stopping a whole tree, and measuring its memory.

The grader and the lab bench start a process (pytest, or a runner) that starts a Jupyter kernel
in a session of its own, which may start processes of its own.  When one of them has to be
stopped, every one of them must go, or a kernel that loops forever keeps running as an orphan.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import psutil


def kill_tree(process: subprocess.Popen) -> None:
    """Kill ``process``, its process group and every descendant, then reap it.

    The descendants are listed before anything is killed: once the parent is gone, its
    children are adopted by init and can no longer be found from it.
    """
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        family = []
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the tools start their children in a new session
    except OSError:
        pass
    for member in [process, *family]:
        try:
            member.kill()
        except (psutil.Error, OSError):
            pass
    process.communicate()


def children_peak_mb() -> float:
    """Peak resident memory in MB of the largest finished child (or grandchild) of this process.

    Only children that have exited and been waited for count.  ``ru_maxrss`` is in kilobytes
    on Linux and in bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
