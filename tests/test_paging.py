"""The paged key/value cache: block allocator invariants, copy-on-write, the waste it saves."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.deploy.paging import (BlockAllocator, OutOfBlocks, Slot, blocks_for, contiguous_usage,
                                  paged_usage, requests_that_fit, shared_prefix_blocks)


def check_invariants(pool: BlockAllocator):
    """Every block is free or owned; a block's refcount is the number of tables holding it; a
    block appears at most once in one table; each table is just long enough for its tokens."""
    owners = Counter()
    for seq in pool.sequences:
        table = pool.table(seq)
        assert len(set(table)) == len(table), f"{seq} holds a block twice"
        assert len(table) == blocks_for(pool.length(seq), pool.block_size)
        owners.update(table)
    free = set(pool._free)
    assert len(free) == len(pool._free), "a block is free twice"
    assert free.isdisjoint(owners), "a free block is owned"
    assert free | set(owners) == set(range(pool.num_blocks)), "a block is lost"
    for block in range(pool.num_blocks):
        assert pool.refcount(block) == owners[block]
    assert pool.used_blocks == len(owners) and pool.free_blocks == len(free)


def test_allocate_append_free():
    pool = BlockAllocator(num_blocks=6, block_size=4)
    assert pool.allocate("a", 5) == [0, 1]
    assert pool.length("a") == 5 and pool.used_blocks == 2 and pool.free_blocks == 4
    assert pool.append("a") == Slot(1, 1)            # block 1 has room: offsets 1, 2, 3
    pool.append("a"), pool.append("a")
    assert pool.append("a") == Slot(2, 0)            # 9th token: a new block
    assert pool.table("a") == [0, 1, 2]
    check_invariants(pool)
    pool.free("a")
    assert pool.used_blocks == 0 and pool.free_blocks == 6
    check_invariants(pool)


def test_fork_shares_and_copy_on_write_copies_once():
    pool = BlockAllocator(num_blocks=8, block_size=4)
    pool.allocate("p", 6)                             # blocks 0 (full) and 1 (2 of 4 tokens)
    pool.fork("p", "c")
    assert pool.used_blocks == 2 and pool.refcount(0) == 2 and pool.refcount(1) == 2
    slot = pool.append("c")                           # writes into shared block 1: copy it
    assert slot.copied_from == 1 and slot.offset == 2 and slot.block not in (0, 1)
    assert pool.copies == 1 and pool.refcount(1) == 1 and pool.refcount(0) == 2
    assert pool.append("p") == Slot(1, 2)             # block 1 is p's alone now: no copy
    assert pool.copies == 1
    check_invariants(pool)


def test_no_copy_when_shared_last_block_is_full():
    pool = BlockAllocator(num_blocks=4, block_size=4)
    pool.allocate("p", 4)
    pool.fork("p", "c")
    slot = pool.append("c")
    assert slot.copied_from is None and slot.offset == 0 and pool.copies == 0
    assert pool.table("c")[0] == pool.table("p")[0] == 0
    check_invariants(pool)


def test_clear_error_when_full_and_nothing_changes():
    pool = BlockAllocator(num_blocks=2, block_size=4)
    assert pool.can_allocate(8) and not pool.can_allocate(9)
    with pytest.raises(OutOfBlocks, match="needs 3 blocks"):
        pool.allocate("a", 9)
    assert pool.sequences == [] and pool.free_blocks == 2
    pool.allocate("a", 8)
    with pytest.raises(OutOfBlocks, match="no free block"):
        pool.append("a")
    assert pool.length("a") == 8
    pool.free("a")
    pool.allocate("b", 3)
    pool.fork("b", "c")
    pool.allocate("d", 4)
    with pytest.raises(OutOfBlocks, match="copy"):
        pool.append("c")
    assert pool.length("c") == 3 and pool.refcount(pool.table("b")[0]) == 2 and pool.copies == 0
    check_invariants(pool)


def test_bad_input():
    with pytest.raises(ValueError, match="block_size"):
        BlockAllocator(4, 0)
    pool = BlockAllocator(4, 2)
    pool.allocate("a", 1)
    with pytest.raises(ValueError, match="already"):
        pool.allocate("a", 1)
    with pytest.raises(ValueError, match="already"):
        pool.fork("a", "a")
    with pytest.raises(KeyError, match="no sequence 'z'; the pool holds: 'a'"):
        pool.append("z")
    with pytest.raises(ValueError, match="n_tokens"):
        pool.allocate("b", -1)


ops = st.lists(st.tuples(st.sampled_from(["allocate", "append", "fork", "free"]),
                         st.integers(0, 5), st.integers(0, 5), st.integers(0, 11)),
               max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(1, 4), st.integers(1, 12))
def test_random_operations_keep_the_invariants_and_the_contents(ops, block_size, num_blocks):
    """Random allocate/append/fork/free sequences: the invariants hold after every step, every
    sequence reads back exactly the tokens it wrote (so copy-on-write copied exactly when a
    shared block was written, and nobody else's write showed through), and freeing everything
    returns every block."""
    pool = BlockAllocator(num_blocks, block_size)
    memory = {}                    # (block, offset) -> token written there
    expected = {}                  # sequence -> its tokens
    counter = iter(range(10**6))
    for op, a, b, n in ops:
        seq, other = f"s{a}", f"s{b}"
        try:
            if op == "allocate" and seq not in expected:
                table = pool.allocate(seq, n)
                expected[seq] = [next(counter) for _ in range(n)]
                for i, token in enumerate(expected[seq]):
                    memory[table[i // block_size], i % block_size] = token
            elif op == "append" and seq in expected:
                shared_before = {blk: pool.refcount(blk) for blk in pool.table(seq)}
                slot = pool.append(seq)
                last = pool.table(seq)[-1]
                if slot.copied_from is not None:
                    assert shared_before[slot.copied_from] > 1, "copied a block nobody shared"
                    for i in range(slot.offset):
                        memory[slot.block, i] = memory[slot.copied_from, i]
                else:
                    assert slot.offset == 0 or shared_before[last] == 1, "wrote a shared block"
                token = next(counter)
                memory[slot.block, slot.offset] = token
                expected[seq].append(token)
            elif op == "fork" and seq in expected and other not in expected:
                pool.fork(seq, other)
                expected[other] = list(expected[seq])
            elif op == "free" and seq in expected:
                pool.free(seq)
                del expected[seq]
        except OutOfBlocks:
            pass
        check_invariants(pool)
        for s, tokens in expected.items():
            table = pool.table(s)
            assert [memory[table[i // block_size], i % block_size] for i in range(len(tokens))] == tokens
    for s in list(expected):
        pool.free(s)
    assert pool.free_blocks == num_blocks and pool.used_blocks == 0
    check_invariants(pool)


# ----------------------------------------------------------------------------- the measurement

@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(0, 20)), min_size=1, max_size=6),
       st.sampled_from([1, 4, 8, 16]))
def test_usage_counts_equal_a_step_by_step_simulation(requests, block_size):
    """The closed-form counts against a loop over the steps, the paged one through a real
    allocator holding every request at once."""
    prompt, generated, spare = zip(*requests)
    reserved = [p + g + s for p, g, s in requests]
    contiguous = contiguous_usage(prompt, generated, reserved)
    paged = paged_usage(prompt, generated, block_size)
    used = held = reserved_slots = never = 0
    for i, (p, g, s) in enumerate(requests):
        pool = BlockAllocator(10_000, block_size)
        pool.allocate(i, p)
        for _ in range(g):
            pool.append(i)
            n = pool.length(i)
            used += n
            held += pool.used_blocks * block_size
            reserved_slots += reserved[i]
            never += s
    assert contiguous["used"] == paged["used"] == used
    assert contiguous["reserved"] == reserved_slots and contiguous["never_used"] == never
    assert contiguous["used"] + contiguous["reserved_for_later"] + never == reserved_slots
    assert paged["reserved"] == held
    assert paged["last_block_unused"] < block_size * sum(generated)   # < one block a request a step
    steps = sum(generated)
    assert requests_that_fit(10_000, paged) == 10_000 * steps // held
    assert requests_that_fit(10_000, contiguous) == 10_000 * steps // reserved_slots


def test_usage_bad_input():
    with pytest.raises(ValueError, match="does not fit"):
        contiguous_usage([10], [5], [12])
    with pytest.raises(ValueError, match="2 prompt lengths but 1"):
        paged_usage([10, 3], [5], 16)


def test_shared_prefix_blocks_by_hand():
    # prompt 20 tokens, block 8: blocks 0, 1 full, block 2 holds 4 tokens; 3 samples of 2 tokens
    # separately: 3 x ceil(22 / 8) = 9 blocks; shared: 3 prompt blocks + 2 copies of the last
    out = shared_prefix_blocks(20, [2, 2, 2], 8)
    assert out == {"separate": 9, "shared": 5, "copies": 2, "saving": 1 - 5 / 9}
    # a prompt that ends on a block boundary needs no copy: 2 full blocks + one new block each
    assert shared_prefix_blocks(16, [3, 3], 8) == {"separate": 6, "shared": 4, "copies": 0, "saving": 1 - 4 / 6}


# ----------------------------------------------------------------------------- real tensors

def tiny_llama():
    import torch
    from tinylm.models.transformer import DecoderLM, TransformerConfig

    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48,
                               max_len=64, norm="rms", positions="rotary", mlp="swiglu", bias=False)
    return DecoderLM(config).eval()


def test_paged_cache_gives_the_logits_of_the_contiguous_cache():
    """Prompt, then tokens one by one, through the pool (block size 3, blocks scattered by an
    earlier sequence); a fork continues from the shared prompt and copy-on-write keeps the
    parent's keys intact: every logit equals the model's with its ordinary KVCache."""
    import torch
    from tinylm.deploy.paging import PagedKVCache

    model = tiny_llama()
    paged = PagedKVCache.for_model(model.config, num_blocks=20, block_size=3)
    assert paged.bytes_per_token == 2 * 2 * 2 * 8 * 4
    paged.reserve("other", 4)                  # blocks 0, 1 taken: the sequences below start at 2
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 50, (1, 7), generator=g)
    nexts = torch.randint(0, 50, (2, 4), generator=g)
    with torch.no_grad():
        ref_state = model.new_state()
        ref_prompt, _ = model(prompt, ref_state)
        got_prompt, _ = model(prompt, paged.sequence("a"))
        torch.testing.assert_close(got_prompt, ref_prompt)
        paged.fork("a", "b")
        for seq, row in (("a", 0), ("b", 1)):
            ref = model.new_state()
            model(prompt, ref)
            for t in range(4):
                token = nexts[row, t].view(1, 1)
                want, _ = model(token, ref)
                got, _ = model(token, paged.sequence(seq))
                torch.testing.assert_close(got, want)
    assert paged.allocator.copies == 1             # b's first token went into a's last block
    assert paged.allocator.length("a") == paged.allocator.length("b") == 11
    shared = set(paged.allocator.table("a")) & set(paged.allocator.table("b"))
    assert len(shared) == 2                        # the prompt's two full blocks
    k, _ = paged.gather("a", 1)
    torch.testing.assert_close(k[None, :, :7], ref_state.keys[1])
