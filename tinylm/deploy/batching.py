"""Continuous batching (连续批处理): many requests share one forward pass, joining and leaving
at every token.

A server that answers one request at a time leaves most of the machine idle: generating a token
for one sequence reads every weight of the model to multiply it by one vector, and reading the
weights, not the arithmetic, is what a decode step costs (:mod:`tinylm.deploy.cost`).  Reading them
once for eight sequences costs little more than for one.  *Static* batching groups requests and
runs the group until its longest member finishes: a short answer waits for the long ones, and a
request arriving meanwhile waits for the whole group.  *Continuous* batching (Yu et al., 2022,
Orca: "iteration-level scheduling") decides again at every step:

1. **admit** waiting requests while fewer than ``max_batch`` run: read each one's prompt (the
   *prefill*) into a key/value cache of its own, and choose its first token;
2. **decode**: ONE forward pass over the newest token of every running sequence;
3. **sample** each row with the request's own :class:`~tinylm.inference.sampling.Sampler` (the
   package's sampler, not a second one);
4. **retire** the sequences that finished (a stop token, ``max_tokens``, or cancelled by their
   client) and free their slots, so the next waiting request joins at the next step.

The sequences of a batch have caches of different lengths.  Step 2 gathers them into one padded
tensor per layer, ``(batch, kv_heads, longest + 1, head_dim)``, with a mask that hides each row's
padding (:class:`BatchCache`); with rotary positions each row also turns its new query and key by
its own position.  The gathering copies every cached key and value at every step:
:attr:`Engine.gather_seconds` measures what it costs.  PagedAttention (vLLM) avoids that copy:
its attention kernel reads each sequence's keys in place, block by block, through a block table
(:mod:`tinylm.deploy.paging`).

Each request streams its tokens as they are chosen (:meth:`Request.stream`, or a callback), and
the engine runs on a thread of its own (:meth:`Engine.start`) while other threads submit and
cancel requests: what the HTTP server of :mod:`tinylm.deploy.server` does.

    engine = Engine(model, max_batch=8)
    request = engine.submit(prompt_ids, max_tokens=20)
    engine.run_until_idle()            # or engine.start() and read request.stream()
    request.tokens, request.finish_reason
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..inference.sampling import GREEDY, Sampler
from ..models.transformer import KVCache

FINISH_REASONS = ("stop", "length", "cancelled", "error")
"""Why a request ended: a stop token, ``max_tokens`` reached, its client cancelled it, or the
engine failed while it ran (``Request.error`` says how)."""

_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One generation request and what has come of it so far.

    Made by :meth:`Engine.submit`.  The engine appends each chosen token to ``tokens`` and
    reports it to ``on_event`` (called on the engine's thread with a token id, then once with
    None when the request ends) and to the queue that :meth:`stream` reads."""

    prompt: list[int]
    max_tokens: int
    sampler: Sampler = GREEDY
    stop: frozenset[int] = frozenset()
    on_event: Callable[[int | None], None] | None = None
    keep_logits: bool = False              # keep each step's logits (tests compare them)
    id: int = field(default_factory=lambda: next(_ids))
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    finish_reason: str | None = None       # one of FINISH_REASONS once done
    error: str | None = None
    submitted_step: int = -1               # the engine's step count when it was submitted
    first_step: int | None = None          # the step that chose its first token
    cancelled: bool = False
    # the engine's private state while the request runs
    cache: KVCache | None = field(default=None, repr=False)
    rng: np.random.Generator | None = field(default=None, repr=False)
    rows_seen: list[int] = field(default_factory=list, repr=False)   # prompt + tokens: the repetition penalty's "previous"
    _events: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request has ended (True), or ``timeout`` seconds have passed (False)."""
        return self._done.wait(timeout)

    def stream(self, timeout: float | None = None) -> Iterator[int]:
        """The request's tokens, one at a time as the engine chooses them (from another thread)."""
        while True:
            token = self._events.get(timeout=timeout)
            if token is None:
                return
            yield token

    def _emit(self, token: int | None) -> None:
        self._events.put(token)
        if self.on_event is not None:
            self.on_event(token)

    def _finish(self, reason: str, error: str | None = None) -> None:
        self.finish_reason, self.error = reason, error
        self.cache = None                   # its keys and values are freed with it
        self._done.set()
        self._emit(None)


class BatchCache:
    """The caches of several sequences of different lengths, seen as one padded batch for one
    decode step.  :class:`~tinylm.models.transformer.MultiHeadAttention` asks it

    - :meth:`positions`: each row's position for its new token(s), (batch, n_new): its own length;
    - :meth:`update`: the keys and values of a layer, gathered from the rows' own caches into
      ``(batch, kv_heads, longest + n_new, head_dim)``, padding after each row's keys and the
      new keys last;
    - :meth:`key_mask`: True where a row's key is real, False at its padding.

    After the forward pass, :meth:`scatter` appends each row's new keys and values to its own
    cache.  The time spent gathering is added to ``gather_seconds`` (CPU-seconds of this thread).
    """

    def __init__(self, caches: Sequence[KVCache]):
        self.caches = list(caches)
        self.lengths = torch.tensor([c.length for c in self.caches])
        self.longest = int(self.lengths.max())
        self.length = self.longest           # DecoderLM adds the new tokens' count after the pass
        self.new_keys: dict[int, torch.Tensor] = {}
        self.new_values: dict[int, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self.gather_seconds = 0.0

    def positions(self, n_new: int) -> torch.Tensor:
        return (self.lengths[:, None] + torch.arange(n_new)).to(torch.float32)

    def _gather(self, layer: int, which: str, new: torch.Tensor) -> torch.Tensor:
        batch, heads, n_new, dim = new.shape
        out = new.new_zeros(batch, heads, self.longest + n_new, dim)
        for row, cache in enumerate(self.caches):
            stored = getattr(cache, which)[layer]
            out[row, :, : stored.shape[-2]] = stored[0]
        out[:, :, self.longest:] = new
        return out

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        start = time.thread_time()
        self.new_keys[layer], self.new_values[layer] = k, v
        k, v = self._gather(layer, "keys", k), self._gather(layer, "values", v)
        self.gather_seconds += time.thread_time() - start
        return k, v

    def key_mask(self) -> torch.Tensor:
        if self._mask is None:
            n_new = next(iter(self.new_keys.values())).shape[-2]
            slots = torch.arange(self.longest + n_new)
            self._mask = ((slots < self.lengths[:, None]) | (slots >= self.longest))[:, None, None, :]
        return self._mask

    def scatter(self) -> None:
        """Append each row's new keys and values to its own cache (and advance its length)."""
        for row, cache in enumerate(self.caches):
            for layer in self.new_keys:
                cache.update(layer, self.new_keys[layer][row:row + 1], self.new_values[layer][row:row + 1])
            cache.length += next(iter(self.new_keys.values())).shape[-2]


@dataclass
class StepReport:
    """What one :meth:`Engine.step` did."""

    step: int
    admitted: list[int]                     # request ids prefilled this step
    batch: int                              # rows in the decode pass (0: none)
    retired: list[tuple[int, str]]          # (request id, finish reason)
    waiting: int                            # requests still waiting after the step


class Engine:
    """The continuous-batching loop over one decoder (a :class:`~tinylm.models.transformer.DecoderLM`
    with rotary positions or none: each row's position lives inside attention).

    ``max_batch`` bounds the sequences that run at once (1: one request at a time).  With an
    ``allocator`` (a :class:`tinylm.deploy.paging.BlockAllocator`) a waiting request is admitted
    only when the blocks for its prompt and ``max_tokens`` fit, and its blocks are freed when it
    leaves.  ``max_context`` (default: the model's ``max_len``) bounds prompt + ``max_tokens``.
    """

    def __init__(self, model, max_batch: int = 8, max_context: int | None = None, allocator=None,
                 trace_length: int = 10_000):
        config = getattr(model, "config", None)
        if getattr(model, "encoder_decoder", False) or not hasattr(model, "new_state"):
            raise ValueError("the engine batches a decoder-only Transformer (DecoderLM)")
        if config is not None and config.positions not in ("rotary", "none"):
            raise ValueError(f"continuous batching here needs rotary positions (or none), applied inside "
                             f"attention row by row; this model's positions are {config.positions!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.max_batch, self.allocator = model, max_batch, allocator
        self.max_context = max_context or model.max_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.steps = 0
        self.trace: deque[int] = deque(maxlen=trace_length)   # decode batch size at each step
        self.gather_seconds = 0.0           # CPU-seconds gathering caches into padded batches
        self.decode_seconds = 0.0           # CPU-seconds of the decode passes (gathering included)
        self.prefill_seconds = 0.0
        self.generated = 0                  # tokens chosen, in all
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._blocks: set[int] = set()      # requests holding blocks of the allocator

    # ------------------------------------------------------------------ submitting (any thread)

    def submit(self, prompt: Sequence[int], max_tokens: int, sampler: Sampler | None = None,
               stop: int | Sequence[int] | None = None, on_event=None, keep_logits: bool = False) -> Request:
        """Queue a request; it joins the batch at a coming step.  ``stop``: the ids that end it
        (not included in its tokens; default: the model's ``config.eos_id``).  Thread-safe."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("a request needs a prompt of at least one token")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if len(prompt) + max_tokens > self.max_context:
            raise ValueError(f"the prompt ({len(prompt)} tokens) and max_tokens ({max_tokens}) add up to "
                             f"{len(prompt) + max_tokens}, more than the context of {self.max_context} tokens")
        if stop is None:
            eos = getattr(getattr(self.model, "config", None), "eos_id", None)
            stop = () if eos is None else (eos,)
        stop = frozenset([int(stop)] if isinstance(stop, (int, np.integer)) else (int(t) for t in stop))
        request = Request(prompt, int(max_tokens), sampler or GREEDY, stop, on_event, keep_logits)
        with self._lock:
            request.submitted_step = self.steps
            self.waiting.append(request)
            self._lock.notify_all()
        return request

    def cancel(self, request: Request) -> None:
        """Ask for a request to end; its slot is freed at the next step.  Thread-safe."""
        with self._lock:
            request.cancelled = True
            self._lock.notify_all()

    @property
    def n_running(self) -> int:
        return len(self.running)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    # ------------------------------------------------------------------ one step (the engine's thread)

    def _retire(self, request: Request, reason: str, retired: list, error: str | None = None) -> None:
        if request in self.running:
            self.running.remove(request)
        if self.allocator is not None and request.id in self._blocks:
            self.allocator.free(request.id)
            self._blocks.discard(request.id)
        request._finish(reason, error)
        retired.append((request.id, reason))

    def _fits(self, request: Request) -> bool:
        """With an allocator: reserve the blocks of the request's whole length, if they fit."""
        if self.allocator is None:
            return True
        try:
            ok = self.allocator.allocate(request.id, len(request.prompt) + request.max_tokens)
        except (MemoryError, RuntimeError, ValueError):
            return False
        if ok is False:
            return False
        self._blocks.add(request.id)
        return True

    def _choose(self, request: Request, logits: torch.Tensor, retired: list) -> None:
        """Pick the request's next token from its logits (V,) and retire it if it is done."""
        if request.keep_logits:
            request.logits.append(logits.detach().clone())
        token = request.sampler.pick(logits, request.rows_seen, request.rng)
        self.generated += 1
        if token in request.stop:
            self._retire(request, "stop", retired)
            return
        request.tokens.append(token)
        request.rows_seen.append(token)
        request._emit(token)
        if len(request.tokens) >= request.max_tokens:
            self._retire(request, "length", retired)

    def step(self) -> StepReport:
        """Admit, decode one token for every running sequence, retire: one iteration."""
        retired: list[tuple[int, str]] = []
        admitted: list[int] = []
        with self._lock:
            for request in [r for r in self.running if r.cancelled]:
                self._retire(request, "cancelled", retired)
            for request in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(request)
                self._retire(request, "cancelled", retired)
            joining = []
            while self.waiting and len(self.running) + len(joining) < self.max_batch and self._fits(self.waiting[0]):
                joining.append(self.waiting.popleft())
            step = self.steps
            self.steps += 1
        batch = 0
        try:
            with torch.inference_mode():
                for request in joining:                       # (a) prefill, each alone
                    start = time.thread_time()
                    request.cache, request.rng = self.model.new_state(), request.sampler.rng()
                    request.rows_seen = list(request.prompt)
                    request.first_step = step
                    logits, _ = self.model(torch.tensor([request.prompt]), request.cache)
                    self.prefill_seconds += time.thread_time() - start
                    self.running.append(request)
                    admitted.append(request.id)
                    self._choose(request, logits[0, -1], retired)
                rows = list(self.running)
                batch = len(rows)
                if rows:                                      # (b) one forward over every newest token
                    start = time.thread_time()
                    newest = torch.tensor([[r.tokens[-1]] for r in rows])
                    if len(rows) == 1:                        # one sequence: its own cache, nothing to gather
                        logits, _ = self.model(newest, rows[0].cache)
                    else:
                        cache = BatchCache([r.cache for r in rows])
                        logits, _ = self.model(newest, cache)
                        cache.scatter()
                        self.gather_seconds += cache.gather_seconds
                    self.decode_seconds += time.thread_time() - start
                    for row, request in enumerate(rows):      # (c) sample each row, (d) retire
                        self._choose(request, logits[row, -1], retired)
        except Exception as exc:                              # fail the running requests, keep serving
            with self._lock:
                for request in list(self.running) + [r for r in joining if r not in self.running and not r.done]:
                    self._retire(request, "error", retired, f"{type(exc).__name__}: {exc}")
            raise
        self.trace.append(batch)
        return StepReport(step, admitted, batch, retired, len(self.waiting))

    def run_until_idle(self, max_steps: int | None = None) -> list[StepReport]:
        """Step until nothing waits or runs (on the calling thread); the steps' reports."""
        reports = []
        while (self.waiting or self.running) and (max_steps is None or len(reports) < max_steps):
            reports.append(self.step())
        return reports

    # ------------------------------------------------------------------ the engine's own thread

    def start(self) -> "Engine":
        """Run the loop on a daemon thread: it steps while there is work and sleeps when idle."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="tinylm-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop (requests still running are cancelled) and wait for the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        retired: list = []
        with self._lock:
            for request in list(self.running) + list(self.waiting):
                self._retire(request, "cancelled", retired)
            self.waiting.clear()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self.waiting and not self.running:
                    self._lock.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception:          # the running requests were failed with the error; go on
                pass
