"""The key/value cache in pages: fixed-size blocks, a block table per sequence, copy-on-write.

A decoder keeps, for every token it has read, one key and one value vector per layer and per
key/value head (:class:`tinylm.models.transformer.KVCache`).  For SmolLM2-135M that is
30 layers x 2 (key and value) x 3 heads x 64 numbers x 4 bytes = 46,080 bytes a token.  A
server holds many requests at once, and it does not know how long an answer will be when the
request arrives.  The simple way, one *contiguous* buffer per request reserved for the longest
it may become, wastes memory three ways (Kwon et al., 2023, section 3):

- **reserved but unused** (预留未用): the slots for tokens the answer will never reach;
- **internal fragmentation** (内部碎片): the same slots, seen after the request ends early;
- **external fragmentation** (外部碎片): gaps between buffers of different sizes.

vLLM's answer is the operating system's: *paging* (分页).  The cache is a pool of
``num_blocks`` **blocks** (块) of ``block_size`` tokens each.  A sequence owns a list of blocks,
its **block table** (块表), which maps its logical blocks (tokens 0..15, 16..31, ...) to physical
ones anywhere in the pool; a new block is taken only when the last one is full.  So a sequence
wastes less than one block, and every block is the same size, so there is no external
fragmentation.  Attention then reads a sequence's keys by *gathering* its blocks through the
table (PagedAttention): :class:`PagedKVCache` does it with real tensors.

Paging also lets sequences **share** blocks.  Sampling n answers to one prompt (parallel
sampling, beam search) needs the prompt's keys and values once: :meth:`BlockAllocator.fork`
gives the child the parent's table and raises each block's **reference count** (引用计数).  A
block is written only while one sequence owns it; when a sequence appends a token to a shared,
partly filled last block, it first gets a private copy (**copy-on-write**, 写时复制), exactly
as a forked process's memory pages are copied when written.

:class:`BlockAllocator` is the bookkeeping alone (no tensors), as vLLM's block manager is; the
measurement functions below (:func:`contiguous_usage`, :func:`paged_usage`,
:func:`requests_that_fit`, :func:`shared_prefix_blocks`) count the waste of both schemes on a mix
of request lengths, in tokens, and :data:`SMOLLM2_KV_BYTES_PER_TOKEN` turns tokens into bytes.
"""

from __future__ import annotations

from typing import Hashable, NamedTuple

import torch

SMOLLM2_KV_BYTES_PER_TOKEN = 30 * 2 * 3 * 64 * 4
"""Bytes of keys and values one token costs in SmolLM2-135M held as float32: 30 layers x (key,
value) x 3 key/value heads x 64 dimensions x 4 bytes = 46,080 (45 KiB)."""


class OutOfBlocks(RuntimeError):
    """The pool has too few free blocks for what was asked; nothing was changed."""


class UnknownSequence(KeyError):
    """The pool holds no sequence of that id."""

    def __str__(self) -> str:           # KeyError would quote the message
        return str(self.args[0])


class Slot(NamedTuple):
    """Where the next token of a sequence goes: physical ``block`` and ``offset`` in it.
    ``copied_from`` is the shared block whose first ``offset`` tokens must be copied into
    ``block`` first (copy-on-write), or None."""

    block: int
    offset: int
    copied_from: int | None = None


def blocks_for(n_tokens: int, block_size: int) -> int:
    """How many blocks of ``block_size`` tokens hold ``n_tokens`` tokens: ceil(n / size)."""
    return -(-int(n_tokens) // int(block_size))


class BlockAllocator:
    """A pool of ``num_blocks`` blocks of ``block_size`` tokens, a block table per sequence and
    a reference count per block (vLLM's block manager, without the tensors).

    >>> pool = BlockAllocator(num_blocks=8, block_size=4)
    >>> pool.allocate("a", 6)          # 6 tokens: two blocks, the second half full
    [0, 1]
    >>> pool.fork("a", "b")            # "b" shares both blocks
    >>> pool.append("b")               # b's 7th token: block 1 is shared, so b copies it first
    Slot(block=2, offset=2, copied_from=1)
    >>> pool.table("a"), pool.table("b"), pool.used_blocks
    ([0, 1], [0, 2], 3)
    """

    def __init__(self, num_blocks: int, block_size: int):
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        self.num_blocks, self.block_size = int(num_blocks), int(block_size)
        self._free = list(range(self.num_blocks - 1, -1, -1))   # a stack: pop() gives the lowest
        self._refs = [0] * self.num_blocks
        self._tables: dict[Hashable, list[int]] = {}
        self._lengths: dict[Hashable, int] = {}
        self.copies = 0          # copy-on-write copies made so far

    # ------------------------------------------------------------------ what the pool holds
    @property
    def free_blocks(self) -> int:
        """Blocks nobody owns."""
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        """Blocks owned by at least one sequence (a shared block counts once)."""
        return self.num_blocks - len(self._free)

    @property
    def sequences(self) -> list:
        return list(self._tables)

    def table(self, seq_id) -> list[int]:
        """The sequence's block table: physical block of its logical blocks 0, 1, ... (a copy)."""
        return list(self._tables[self._known(seq_id)])

    def length(self, seq_id) -> int:
        """Tokens the sequence holds."""
        return self._lengths[self._known(seq_id)]

    def refcount(self, block: int) -> int:
        """How many sequences own ``block`` (0: it is free)."""
        return self._refs[block]

    def can_allocate(self, n_tokens: int) -> bool:
        """Whether a new sequence of ``n_tokens`` tokens would fit now."""
        return blocks_for(n_tokens, self.block_size) <= len(self._free)

    # ------------------------------------------------------------------ the operations
    def allocate(self, seq_id, n_tokens: int) -> list[int]:
        """Blocks for a new sequence's prompt of ``n_tokens`` tokens; returns its block table."""
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already has blocks; free it first")
        if int(n_tokens) != n_tokens or n_tokens < 0:
            raise ValueError(f"n_tokens must be a whole number >= 0, got {n_tokens!r}")
        need = blocks_for(n_tokens, self.block_size)
        if need > len(self._free):
            raise OutOfBlocks(f"sequence {seq_id!r} needs {need} blocks of {self.block_size} tokens "
                              f"for {n_tokens} tokens, but only {len(self._free)} of "
                              f"{self.num_blocks} are free")
        table = [self._take() for _ in range(need)]
        self._tables[seq_id], self._lengths[seq_id] = table, int(n_tokens)
        return list(table)

    def append(self, seq_id) -> Slot:
        """Room for one more token of ``seq_id``: a new block when the last is full (or there is
        none), a private copy when the last block is shared and partly filled (copy-on-write).
        Returns the token's :class:`Slot`."""
        table, n = self._tables[self._known(seq_id)], self._lengths[seq_id]
        offset = n % self.block_size
        if offset == 0:                                  # last block full, or no block yet
            if not self._free:
                raise OutOfBlocks(f"no free block for token {n + 1} of sequence {seq_id!r} "
                                  f"(all {self.num_blocks} blocks are in use)")
            table.append(self._take())
            slot = Slot(table[-1], 0)
        elif self._refs[table[-1]] > 1:                  # shared: copy before writing
            if not self._free:
                raise OutOfBlocks(f"sequence {seq_id!r} must copy its shared last block before "
                                  f"writing token {n + 1}, but no block is free")
            old = table[-1]
            self._refs[old] -= 1
            table[-1] = self._take()
            self.copies += 1
            slot = Slot(table[-1], offset, old)
        else:
            slot = Slot(table[-1], offset)
        self._lengths[seq_id] = n + 1
        return slot

    def fork(self, parent, child) -> None:
        """``child`` starts as a copy of ``parent`` that shares all its blocks (no new block)."""
        if child in self._tables:
            raise ValueError(f"sequence {child!r} already exists")
        table = self._tables[self._known(parent)]
        for block in table:
            self._refs[block] += 1
        self._tables[child], self._lengths[child] = list(table), self._lengths[parent]

    def free(self, seq_id) -> None:
        """The sequence is finished: each of its blocks loses an owner; unowned blocks return."""
        for block in self._tables.pop(self._known(seq_id)):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free.append(block)
        del self._lengths[seq_id]

    # ------------------------------------------------------------------ helpers
    def _take(self) -> int:
        block = self._free.pop()
        self._refs[block] = 1
        return block

    def _known(self, seq_id):
        if seq_id not in self._tables:
            held = ", ".join(map(repr, self._tables)) or "none"
            raise UnknownSequence(f"no sequence {seq_id!r}; the pool holds: {held}")
        return seq_id

    def __repr__(self) -> str:
        return (f"BlockAllocator({self.num_blocks} blocks of {self.block_size} tokens: "
                f"{self.used_blocks} used, {len(self._tables)} sequences)")


# ----------------------------------------------------------------------------- real keys and values

class PagedKVCache:
    """Keys and values of many sequences in one pool of blocks, read through each block table.

    ``keys`` and ``values`` are tensors (layers, num_blocks, kv_heads, block_size, head_dim):
    physical block b of layer l holds ``block_size`` tokens of every key/value head.  A
    sequence's keys are *gathered* from its blocks in the order of its table, the index
    operation at the heart of PagedAttention (vLLM does it inside the attention kernel, without
    building the contiguous copy that :meth:`gather` builds here).

    :meth:`sequence` gives the cache of one sequence in the form the model expects
    (``length``, ``positions``, ``key_mask``, ``update``), so
    ``model(ids, paged.sequence("a"))`` reads and writes through the pool; ``paged.fork("a",
    "b")`` then lets "b" continue from "a"'s prompt without copying it.
    """

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32):
        self.allocator = BlockAllocator(num_blocks, block_size)
        shape = (n_layers, num_blocks, kv_heads, block_size, head_dim)
        self.keys, self.values = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self._slots: dict = {}           # sequence -> slots of the tokens being written now

    @classmethod
    def for_model(cls, config, num_blocks: int, block_size: int) -> "PagedKVCache":
        """A pool shaped for a :class:`~tinylm.models.transformer.TransformerConfig`."""
        return cls(config.n_layers, config.kv_heads, config.head_dim, num_blocks, block_size)

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys and values one token takes: layers x 2 x kv_heads x head_dim x element size."""
        layers, _, heads, _, d = self.keys.shape
        return layers * 2 * heads * d * self.keys.element_size()

    def reserve(self, seq_id, n_new: int) -> list[Slot]:
        """Slots for ``n_new`` more tokens of ``seq_id`` (a new sequence gets a prompt's blocks);
        a copy-on-write slot copies its shared block, in every layer, before anything is written."""
        pool = self.allocator
        if seq_id not in pool.sequences:
            table = pool.allocate(seq_id, n_new)
            return [Slot(table[i // pool.block_size], i % pool.block_size) for i in range(n_new)]
        slots = []
        for _ in range(n_new):
            slot = pool.append(seq_id)
            if slot.copied_from is not None:
                self.keys[:, slot.block] = self.keys[:, slot.copied_from]
                self.values[:, slot.block] = self.values[:, slot.copied_from]
            slots.append(slot)
        return slots

    def write(self, layer: int, slots: list[Slot], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys and values (kv_heads, n, head_dim) of n tokens at their slots."""
        blocks = torch.tensor([s.block for s in slots])
        offsets = torch.tensor([s.offset for s in slots])
        self.keys[layer, blocks, :, offsets] = k.transpose(0, 1).to(self.keys.dtype)
        self.values[layer, blocks, :, offsets] = v.transpose(0, 1).to(self.values.dtype)

    def gather(self, seq_id, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence's keys and values of one layer, (kv_heads, length, head_dim), read from
        its blocks in table order."""
        table, n = torch.tensor(self.allocator.table(seq_id)), self.allocator.length(seq_id)
        heads, d = self.keys.shape[2], self.keys.shape[4]

        def read(pool):                  # (blocks, heads, size, d) -> (heads, blocks * size, d)
            return pool[layer, table].transpose(0, 1).reshape(heads, -1, d)[:, :n]
        return read(self.keys), read(self.values)

    def fork(self, parent, child) -> None:
        self.allocator.fork(parent, child)

    def free(self, seq_id) -> None:
        self.allocator.free(seq_id)

    def sequence(self, seq_id) -> "SequenceCache":
        """The cache of one sequence, as :class:`~tinylm.models.transformer.DecoderLM` uses one."""
        return SequenceCache(self, seq_id)


class SequenceCache:
    """One sequence's view of a :class:`PagedKVCache`, with the interface of
    :class:`~tinylm.models.transformer.KVCache` for a batch of one: layer 0 reserves the slots of
    the new tokens, every layer writes its keys and values there and reads the whole sequence
    back through the block table."""

    def __init__(self, paged: PagedKVCache, seq_id):
        self.paged, self.seq_id = paged, seq_id
        pool = paged.allocator
        self.length = pool.length(seq_id) if seq_id in pool.sequences else 0

    def positions(self, n_new: int) -> torch.Tensor:
        return torch.arange(self.length, self.length + n_new, dtype=torch.float32)

    def key_mask(self):
        return None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if k.shape[0] != 1:
            raise ValueError(f"a SequenceCache holds one sequence; got a batch of {k.shape[0]}")
        if layer == 0:
            self.paged._slots[self.seq_id] = self.paged.reserve(self.seq_id, k.shape[-2])
        self.paged.write(layer, self.paged._slots[self.seq_id], k[0], v[0])
        keys, values = self.paged.gather(self.seq_id, layer)
        return keys[None], values[None]


# ----------------------------------------------------------------------------- the measurement

def _lengths(prompt, generated):
    prompt, generated = [int(p) for p in prompt], [int(g) for g in generated]
    if len(prompt) != len(generated):
        raise ValueError(f"{len(prompt)} prompt lengths but {len(generated)} answer lengths")
    if not prompt or min(prompt) < 1 or min(generated) < 1:
        raise ValueError("give at least one request, each with >= 1 prompt and >= 1 generated token")
    return prompt, generated


def contiguous_usage(prompt, generated, reserved) -> dict:
    """Token-slots of a cache that gives each request one contiguous buffer of ``reserved[i]``
    tokens (its maximum: prompt + max_tokens, or the model's whole context) for its whole life.

    Counted at every decoding step of every request (the cache holds prompt + t tokens after
    step t = 1 .. generated) and summed: ``used`` slots hold a token, ``reserved_for_later``
    will hold one before the request ends, ``never_used`` never will (internal fragmentation);
    ``reserved`` is all three.  ``waste`` = (reserved - used) / reserved."""
    prompt, generated = _lengths(prompt, generated)
    reserved = [int(r) for r in reserved]
    used = later = never = total = 0
    for p, g, r in zip(prompt, generated, reserved):
        if r < p + g:
            raise ValueError(f"a request of {p} + {g} tokens does not fit in {r} reserved")
        used += g * p + g * (g + 1) // 2                    # sum of p + t, t = 1 .. g
        later += g * (p + g) - (g * p + g * (g + 1) // 2)   # sum of (p + g) - (p + t)
        never += g * (r - p - g)
        total += g * r
    return {"used": used, "reserved_for_later": later, "never_used": never, "reserved": total,
            "waste": (total - used) / total, "steps": sum(generated)}


def paged_usage(prompt, generated, block_size: int) -> dict:
    """The same count for a paged cache: after step t a request holds ceil((p + t) / block_size)
    blocks, so its only unused slots are the rest of its last block (< one block)."""
    prompt, generated = _lengths(prompt, generated)
    used = held = 0
    for p, g in zip(prompt, generated):
        for n in range(p + 1, p + g + 1):
            used += n
            held += blocks_for(n, block_size) * block_size
    return {"used": used, "last_block_unused": held - used, "reserved": held,
            "waste": (held - used) / held, "steps": sum(generated)}


def requests_that_fit(budget_tokens: int, usage: dict) -> int:
    """How many requests a cache of ``budget_tokens`` token-slots holds at once, at the mix's
    average footprint (reserved slots per request per step): the batch size it allows."""
    return int(budget_tokens) * usage["steps"] // usage["reserved"]


def shared_prefix_blocks(prompt: int, generated, block_size: int) -> dict:
    """Blocks that ``len(generated)`` samples of one ``prompt``-token prompt hold at their end,
    each with its own copy of the prompt, or sharing it through :meth:`BlockAllocator.fork`
    (copy-on-write copies the prompt's partly filled last block once per sample that writes
    into it).  Counted with a real :class:`BlockAllocator`."""
    generated = [int(g) for g in generated]
    need = sum(blocks_for(prompt + g, block_size) for g in generated)
    pool = BlockAllocator(need, block_size)
    pool.allocate(0, prompt)
    for i in range(1, len(generated)):
        pool.fork(0, i)
    for i, g in enumerate(generated):
        for _ in range(g):
            pool.append(i)
    return {"separate": need, "shared": pool.used_blocks, "copies": pool.copies,
            "saving": 1 - pool.used_blocks / need}
