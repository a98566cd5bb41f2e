"""A pytest plugin that adapts nbval to tinylm's notebooks.

Used by the repository's tests (``pytest_plugins = ["tinylm_course.nbval_plugin"]``) and by the
grader (``pytest -p tinylm_course.nbval_plugin``), always together with ``--nbval`` and
``--nbval-sanitize-with`` :data:`SANITIZE_FILE`.  It changes five things:

1. **stderr is not compared.**  Warnings and progress bars go to stderr and differ between
   machines, so ``stderr`` stream outputs are dropped from both sides before nbval compares.
2. **A timeout does not condemn the rest of the notebook.**  After a cell times out nbval
   interrupts the kernel and marks every later cell "expected to fail".  If the interrupt
   worked and the kernel is alive, later cells run and count normally.
3. **A dead kernel is noticed at once.**  nbval waits for a reply from a kernel that has
   exited (``exit()``, ``os._exit``, a crash) until the cell timeout and then reports a
   timeout; here the cell fails within a second with "the kernel died".
4. **Figures are not compared.**  nbval skips PNG and JPEG outputs; SVG figures (the labs'
   format) are skipped too: their text holds a date and machine-dependent coordinates.
5. **What happened is recorded** as JUnit properties, which the grader reports without
   parsing nbval's text: for a failed cell ``error = "Type: message"`` if it raised and
   ``stdout``, what it printed (cut to :data:`RECORD_LIMIT` characters); for any cell
   ``truncated = "yes"`` if its printed output was cut short by the grader's output cap
   (whose note starts with :data:`TRUNCATED`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from queue import Empty

import pytest
from nbval.plugin import IPyNbCell

SANITIZE_FILE = Path(__file__).with_name("nbval_sanitize.cfg")
"""The one sanitiser file for nbval (memory addresses, figure sizes...)."""

KERNEL_DIED = "the kernel died"
"""How a cell whose kernel died fails (the grader looks for these words)."""

TRUNCATED = "[output truncated"
"""The start of the note that marks printed output cut short by the grader."""

RECORD_LIMIT = 2000
"""Characters of a failed cell's stdout kept in the JUnit report."""

POLL_SECONDS = 0.5
"""How often a cell waiting for its reply checks that the kernel is alive."""


class KernelDied(RuntimeError):
    """The kernel exited or crashed while a cell was running."""


# 1. stderr ---------------------------------------------------------------------------

def _without_stderr(outputs):
    return [out for out in outputs if not (out.get("output_type") == "stream" and out.get("name") == "stderr")]


def _stderr_blind(compare_outputs):
    """Wrap a cell's ``compare_outputs(test, ref, ...)`` so that it ignores stderr."""
    @functools.wraps(compare_outputs)
    def compare(test, ref, *args, **kwargs):
        return compare_outputs(_without_stderr(test), _without_stderr(ref), *args, **kwargs)
    return compare


def pytest_itemcollected(item):
    if isinstance(item, IPyNbCell):
        item.compare_outputs = _stderr_blind(item.compare_outputs)
        # 4. figures: nbval skips PNG and JPEG images but compares SVG text, which holds the date it
        # was drawn and the last digits of every coordinate; a figure is never a checked output.
        if "image/svg+xml" not in item.parent.skip_compare:
            item.parent.skip_compare = item.parent.skip_compare + ("image/svg+xml",)


# 2. timeouts -------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval's setup xfails the cell, forgive a timeout the kernel survived."""
    notebook = getattr(item, "parent", None)
    if isinstance(item, IPyNbCell) and notebook.timed_out and _alive(notebook.kernel):
        notebook.timed_out = False


def _alive(kernel) -> bool:
    return kernel is not None and kernel.is_alive()


# 3. kernel death ---------------------------------------------------------------------

def _await_reply_or_death(kernel, msg_id, timeout=None):
    """nbval's ``RunningKernel.await_reply``, failing fast if the kernel exits.

    Raises ``queue.Empty`` on timeout, as nbval expects, and :class:`KernelDied` when the
    kernel process is gone or the cell asked it to exit (IPython's ``exit()``, after which
    the kernel is stopped at once).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
        try:
            msg = kernel.get_message(stream="shell", timeout=wait)
        except Empty:
            if not kernel.is_alive():
                raise KernelDied(f"{KERNEL_DIED}: the code exited the kernel or crashed it") from None
            if deadline is not None and time.monotonic() >= deadline:
                raise
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if any(p.get("source") == "ask_exit" and not p.get("keepkernel") for p in msg["content"].get("payload", [])):
            kernel.stop()  # it would exit a moment later, perhaps in the middle of the next cell
            raise KernelDied(f"{KERNEL_DIED}: the code called exit()")
        if msg["content"]["status"] == "aborted":
            raise RuntimeError("Kernel aborted execution request")
        return


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Give the cell's kernel the death-aware ``await_reply`` (once per kernel)."""
    kernel = getattr(getattr(item, "parent", None), "kernel", None)
    if isinstance(item, IPyNbCell) and kernel is not None and "await_reply" not in vars(kernel):
        kernel.await_reply = functools.partial(_await_reply_or_death, kernel)


# 4. what happened --------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Record what a failed cell raised and printed, and whether a cell's output was cut."""
    report = yield
    if isinstance(item, IPyNbCell) and call.when == "call":
        outputs = item.test_outputs or []
        if report.failed:
            for out in outputs:
                if out.get("output_type") == "error":
                    item.user_properties.append(("error", ": ".join(filter(None, (out["ename"], out["evalue"])))))
            stdout = "".join(out.get("text", "") for out in outputs if out.get("name") == "stdout")
            item.user_properties.append(("stdout", stdout[:RECORD_LIMIT]))
        if any(TRUNCATED in out.get("text", "") for out in outputs):
            item.user_properties.append(("truncated", "yes"))
    return report
