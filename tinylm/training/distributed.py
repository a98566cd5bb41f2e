"""Data parallelism (数据并行): one training run spread over several processes with ``torch.distributed``.

Every process (a **rank**, 进程编号 0 .. world_size - 1) holds a whole copy of the model, takes
its own **shard** of each batch, and computes the gradient of its shard's loss; the gradients are
then averaged over the ranks by an **all-reduce** (全归约: every rank sends its numbers and every
rank receives the sum), and every rank takes the same optimizer step with the same averaged
gradient.  The copies start equal and stay equal, and since the loss of a batch is the mean of its
rows' losses, the average of the ranks' gradients is the gradient of the whole batch: W processes
with batches of B / W rows train as one process with batches of B rows would, on the union of
their rows (to the rounding of float32 sums, which add in another order).

:func:`tinylm.training.train` does all this by itself when the script runs under ``torchrun``::

    torchrun --nproc_per_node 2 my_script.py     # or: python -m torch.distributed.run ...

``torchrun`` starts the processes and gives each its ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; the loop (through :func:`world`) joins them into a process group with the
**gloo** backend (CPU; ``nccl`` is its GPU counterpart), then:

- rank ``r``'s objective draws batches of ``batch_size / world_size`` rows from its own
  generator, seeded ``seed + r`` (:func:`shard_seed`), so the ranks read different rows;
- rank 0's weights are copied to every rank before the first step (:func:`broadcast_parameters`),
  as ``DistributedDataParallel`` does, so the copies start equal even if a script seeded them
  differently;
- after each step's backward pass the gradients are averaged (:func:`average_gradients`), once
  per optimizer step, also when the step accumulates several micro-batches;
- only rank 0 evaluates, shows progress and (in scripts, with :func:`is_main`) writes files;
  the validation metrics are sent to the other ranks (:func:`broadcast_object`) so that every
  rank keeps the same best weights and stops at the same step.

**Why an all-reduce and not** ``torch.nn.parallel.DistributedDataParallel`` **(DDP)?**  DDP is the
standard tool and does the same arithmetic (Li et al., 2020): it registers hooks on the
parameters and all-reduces the gradients in buckets *while* the backward pass is still running,
which hides the communication behind computation on GPUs.  But DDP must wrap the model and be
called as the model: its reducer is armed by the wrapper's ``forward``.  The course's objectives
call their models in several ways (``model.encoder`` and ``model.head`` for BERT, ``model.encode``
for T5), which a DDP wrapper would not see.  One all-reduce of all the gradients after the
backward pass works for every objective; on two CPU processes and a small model there is little
backward pass to hide the communication behind.  Lab 19 shows DDP giving the same weights.

:func:`launch` starts a script on several local processes with ``torchrun`` (a free port on
127.0.0.1, one thread each, a timeout), for tests and labs.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

BACKEND = "gloo"
"""The CPU backend of ``torch.distributed``."""


def available() -> bool:
    """Whether this build of torch has ``torch.distributed`` with the gloo backend."""
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` when it runs alone.

    Under ``torchrun`` (the environment has ``WORLD_SIZE`` > 1) and with no process group yet,
    one is started with the gloo backend from the environment ``torchrun`` set."""
    dist = torch.distributed
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        if not dist.is_gloo_available():
            raise RuntimeError("this build of torch has no gloo backend: it cannot train on several CPU processes")
        dist.init_process_group(BACKEND, timeout=datetime.timedelta(minutes=30))
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True in the process that writes logs and checkpoints: rank 0, or a process alone."""
    return world()[0] == 0


def shard_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batches: ``seed + rank`` (rank 0, or a process alone, keeps ``seed``)."""
    return seed + rank


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and floating-point buffers to every rank."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]:
            torch.distributed.broadcast(tensor.data, src=0)


def average_gradients(model: torch.nn.Module) -> None:
    """Replace every parameter's gradient by its mean over the ranks, in one all-reduce.

    All gradients travel as one flat tensor (as DDP's buckets do, in one bucket).  A parameter
    that got no gradient on some rank (a mixture-of-experts' expert no row of that shard was sent
    to) counts as zero there; one that got none on any rank keeps ``grad = None``, as it would in
    one process, so the optimizer leaves it alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    has_grad = torch.tensor([float(p.grad is not None) for p in params])
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [has_grad])
    torch.distributed.all_reduce(flat)                       # the sum over the ranks
    flat /= torch.distributed.get_world_size()
    offset = 0
    for p, seen in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p) if seen > 0 else None
        offset += n


def mean_over_ranks(value: float) -> float:
    """The mean of a number over the ranks (a training loss, each rank's on its own shard)."""
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total.item() / torch.distributed.get_world_size())


def broadcast_object(value):
    """Rank 0's ``value`` (any picklable object), on every rank."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- launching

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the operating system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(script: str | Path, nproc: int = 2, args: tuple[str, ...] = (), timeout: float = 120.0,
           threads: int = 1, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m torch.distributed.run --nproc_per_node NPROC SCRIPT ARGS`` on this machine.

    The processes meet on a free port of 127.0.0.1 and use ``threads`` threads each
    (``OMP_NUM_THREADS``).  Returns the finished process (its ``stdout`` and ``stderr`` as text);
    raises ``RuntimeError`` with the end of its output if it failed, and ``TimeoutError`` after
    ``timeout`` seconds, when the launcher and the ranks it started are killed, so a rank waiting
    for a partner that died cannot hang the caller.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if not available():
        raise RuntimeError("torch.distributed with the gloo backend is not available in this build of torch")
    if not Path(script).is_file():
        raise FileNotFoundError(f"no script {script}")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
               str(script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)                  # a launcher inside a launched process starts afresh
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        stdout, stderr = process.communicate()
        raise TimeoutError(f"torchrun ran longer than {timeout:g} s and was killed with its {nproc} processes; "
                           f"the end of its output:\n{_tail(stdout, stderr)}") from None
    if process.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit code {process.returncode}); the end of its output:\n"
                           f"{_tail(stdout, stderr)}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill(process: subprocess.Popen) -> None:
    """Kill the launcher and the ranks it started.  torchrun starts each rank in a session of its
    own, so killing the launcher's process group does not reach them: they are found as its
    children (Linux's ``/proc``) and killed by their ids first."""
    ranks = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == process.pid:                   # field 4 of stat: the parent's id
            ranks.append(int(stat.parent.name))
    for pid in ranks:
        try:
            os.killpg(pid, signal.SIGKILL)                  # a rank leads its own session and group
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(stdout: str, stderr: str, lines: int = 30) -> str:
    return "\n".join((stdout + "\n" + stderr).strip().splitlines()[-lines:])
