"""Continuous batching (tinylm.deploy.batching) against generating one request at a time."""

import threading

import pytest
import torch

import tinylm
from tinylm.deploy.batching import BatchCache, Engine
from tinylm.deploy.paging import BlockAllocator
from tinylm.inference.sampling import GREEDY, Sampler
from tinylm.models.transformer import DecoderLM, TransformerConfig


def tiny(vocab=211, eos=None, seed=0):
    """A random LLaMA-style decoder (RMSNorm, rotary, SwiGLU, grouped-query attention); weights
    larger than usual so that its greedy choices are not near-ties."""
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=vocab, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_len=96,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False, eos_id=eos)
    model = DecoderLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny()


PROMPTS = [[5, 17, 3], [9] * 11, [1, 2, 3, 4, 5, 6, 7], [42], [100, 7, 7, 30, 2]]
ARRIVALS = [0, 0, 2, 3, 7]                  # the step before which each request is submitted
MAX_TOKENS = [12, 6, 15, 9, 5]


def run_staggered(engine, prompts=PROMPTS, arrivals=ARRIVALS, max_tokens=MAX_TOKENS, **kw):
    requests, step = {}, 0
    while len(requests) < len(prompts) or engine.n_running or engine.n_waiting:
        for i, at in enumerate(arrivals):
            if at == step:
                requests[i] = engine.submit(prompts[i], max_tokens[i], keep_logits=True, **kw)
        engine.step()
        step += 1
    return [requests[i] for i in range(len(prompts))]


def reference_logits(model, prompt, tokens):
    """The logits that chose each token, from one forward pass over the whole text (no cache)."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt + tokens]))
    return logits[0, len(prompt) - 1: len(prompt) - 1 + len(tokens)]


def test_staggered_requests_equal_generating_them_one_at_a_time(model):
    engine = Engine(model, max_batch=4)
    requests = run_staggered(engine)
    assert max(engine.trace) > 1                    # they really shared decode passes
    for request, prompt, n in zip(requests, PROMPTS, MAX_TOKENS):
        alone = tinylm.generate(model, prompt, n, GREEDY)
        assert request.tokens == alone
        assert request.finish_reason == "length"
        kept = torch.stack(request.logits)
        assert torch.allclose(kept, reference_logits(model, prompt, request.tokens), atol=1e-4)


def test_sampled_requests_equal_generate_with_the_same_sampler(model):
    sampler = Sampler(temperature=0.8, top_k=20, repetition_penalty=1.3, seed=4)
    engine = Engine(model, max_batch=3)
    requests = run_staggered(engine, sampler=sampler)
    for request, prompt, n in zip(requests, PROMPTS, MAX_TOKENS):
        assert request.tokens == tinylm.generate(model, prompt, n, sampler)


def test_a_stop_token_ends_a_request_and_is_not_included(model):
    alone = tinylm.generate(model, PROMPTS[2], 15, GREEDY)
    stop = alone[6]
    engine = Engine(model, max_batch=4)
    request = engine.submit(PROMPTS[2], 15, stop=[stop])
    other = engine.submit(PROMPTS[0], 12)
    engine.run_until_idle()
    assert request.tokens == alone[: alone.index(stop)] and request.finish_reason == "stop"
    assert other.tokens == tinylm.generate(model, PROMPTS[0], 12, GREEDY)


def test_the_batch_limit_holds_and_a_request_joins_at_the_next_step(model):
    engine = Engine(model, max_batch=2)
    first = [engine.submit(p, n) for p, n in zip(PROMPTS[:3], (8, 12, 8))]
    report = engine.step()
    assert report.admitted == [first[0].id, first[1].id] and report.batch == 2 and report.waiting == 1
    late = engine.submit(PROMPTS[3], 3)
    while not first[0].done and not first[1].done:
        assert engine.step().batch <= 2
    report = engine.step()                          # a slot is free: the oldest waiting request joins
    assert first[2].id in report.admitted and late.id not in report.admitted
    reports = engine.run_until_idle()
    assert max(engine.trace) == 2 and all(r.batch <= 2 for r in reports)
    assert late.first_step > late.submitted_step
    assert late.tokens == tinylm.generate(model, PROMPTS[3], 3, GREEDY)


def test_a_request_submitted_between_steps_starts_at_the_next_step(model):
    engine = Engine(model, max_batch=4)
    a = engine.submit(PROMPTS[0], 10)
    engine.step()
    engine.step()
    b = engine.submit(PROMPTS[1], 4)
    report = engine.step()
    assert report.admitted == [b.id] and report.batch == 2 and b.first_step == 2
    assert len(b.tokens) == 2                       # its prefill chose one token, the shared pass another


def test_cancelling_frees_the_slot_at_the_next_step(model):
    engine = Engine(model, max_batch=1)
    a = engine.submit(PROMPTS[0], 50)
    b = engine.submit(PROMPTS[1], 3)
    engine.step()
    engine.step()
    assert engine.n_running == 1 and engine.n_waiting == 1
    engine.cancel(a)
    report = engine.step()
    assert (a.id, "cancelled") in report.retired and a.done and a.finish_reason == "cancelled"
    assert report.admitted == [b.id] and len(a.tokens) == 3
    engine.run_until_idle()
    assert engine.n_running == 0 and b.tokens == tinylm.generate(model, PROMPTS[1], 3, GREEDY)


def test_the_padded_batch_hides_padding_and_turns_each_row_by_its_own_position(model):
    caches = []
    for prompt in ([3, 4, 5, 6], [7]):
        cache = model.new_state()
        model(torch.tensor([prompt]), cache)
        caches.append(cache)
    batch = BatchCache(caches)
    assert batch.positions(1).tolist() == [[4.0], [1.0]]
    with torch.no_grad():
        model(torch.tensor([[8], [9]]), batch)
    assert batch.key_mask()[:, 0, 0].tolist() == [[True] * 5, [True, False, False, False, True]]
    assert batch.gather_seconds >= 0


def test_streaming_from_the_engines_thread_and_thread_safe_submission(model):
    engine = Engine(model, max_batch=3).start()
    try:
        results = {}

        def client(i):
            request = engine.submit(PROMPTS[i], MAX_TOKENS[i])
            results[i] = list(request.stream(timeout=30))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for i, prompt in enumerate(PROMPTS):
            assert results[i] == tinylm.generate(model, prompt, MAX_TOKENS[i], GREEDY)
    finally:
        engine.stop()
    assert not engine.alive and engine.n_running == 0


def test_admission_waits_for_blocks_when_an_allocator_is_given(model):
    allocator = BlockAllocator(num_blocks=4, block_size=8)        # 32 token slots
    engine = Engine(model, max_batch=4, allocator=allocator)
    a = engine.submit(PROMPTS[1], 10)                              # 21 tokens: 3 blocks
    b = engine.submit(PROMPTS[0], 10)                              # 13 tokens: 2 blocks, must wait
    report = engine.step()
    assert report.admitted == [a.id] and allocator.used_blocks == 3
    engine.run_until_idle()
    assert b.done and allocator.used_blocks == 0
    assert b.tokens == tinylm.generate(model, PROMPTS[0], 10, GREEDY)


def test_bad_requests_are_refused_clearly(model):
    engine = Engine(model, max_batch=2)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit([1, 2], 0)
    with pytest.raises(ValueError, match="context of 96"):
        engine.submit([1] * 90, 10)
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit([], 3)
    learned = DecoderLM(TransformerConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1))
    with pytest.raises(ValueError, match="rotary"):
        Engine(learned)
