"""The alignment chapter's data (tinylm.data.instructions): splits that share nothing, answers
checked another way, a lossless chat template, the pre-training mixture; and SFT's fast batched
sampling (tinylm.alignment.sft.sample) against tinylm.generate."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinylm
from tinylm.alignment.sft import MAX_ANSWER_TOKENS, sample
from tinylm.data.instructions import (CHAT_SPECIALS, LANGUAGES, NUMBERS, SPLIT_SIZES, TASK_SHARE, ChatTemplate,
                                      chat_tokenizer, examples, few_shot_prompt, instruction_tasks, pretraining_text,
                                      raw_lines)
from tinylm.data.numerals import parse_chinese_numeral
from tinylm.models import DecoderLM, TransformerConfig

SPLITS = ("train", "valid", "test")
HELD_OUT = ("valid", "test")


@pytest.fixture(scope="module")
def tasks():
    return instruction_tasks()


@pytest.fixture(scope="module")
def template():
    return ChatTemplate(chat_tokenizer())


# --------------------------------------------------------------------------- splits

def test_splits_have_their_sizes_and_are_the_same_on_every_call(tasks):
    again = instruction_tasks.__wrapped__(0)                 # computed afresh, not from the cache
    for name, task in tasks.items():
        for split in HELD_OUT:
            assert len(task.problems[split]) == SPLIT_SIZES[split], (name, split)
        assert len(task.problems["train"]) > 500, name
        assert again[name].problems == task.problems, f"{name}: the split is not deterministic"
    assert instruction_tasks.__wrapped__(1)["add"].problems["test"] != tasks["add"].problems["test"]


def test_splits_are_disjoint(tasks):
    for name, task in tasks.items():
        sets = {split: set(task.problems[split]) for split in SPLITS}
        assert all(len(sets[s]) == len(task.problems[s]) for s in SPLITS), f"{name}: a problem repeats in a split"
        assert sets["train"].isdisjoint(sets["valid"]) and sets["train"].isdisjoint(sets["test"]), name
        assert sets["valid"].isdisjoint(sets["test"]), name


def test_the_numeral_tasks_share_no_number_across_splits(tasks):
    """Knowing 305 one way is knowing it the other way: a number held out of one numeral task is
    held out of both."""
    numbers = {split: set(tasks["to_digits"].problems[split]) | set(tasks["to_chinese"].problems[split])
               for split in SPLITS}
    assert numbers["train"].isdisjoint(numbers["valid"] | numbers["test"])
    assert numbers["valid"].isdisjoint(numbers["test"])
    assert set().union(*numbers.values()) == set(range(NUMBERS))


# --------------------------------------------------------------------------- answers

def test_answers_are_right_by_another_computation(tasks):
    for split in SPLITS:
        for a, b in tasks["add"].problems[split]:
            assert int(tasks["add"].answer((a, b))) == a + b
        for n in tasks["to_chinese"].problems[split]:
            assert parse_chinese_numeral(tasks["to_chinese"].answer(n)) == n
        for n in tasks["to_digits"].problems[split]:
            request = tasks["to_digits"].request(n, "en")
            numeral = re.fullmatch(r"Write (\S+) in digits\.", request).group(1)
            assert int(tasks["to_digits"].answer(n)) == parse_chinese_numeral(numeral) == n
        for word in tasks["reverse"].problems[split]:
            answer = tasks["reverse"].answer(word)
            assert "".join(reversed(answer)) == word and answer != word and word.isalpha()


def test_requests_and_raw_lines_read_as_documented(tasks):
    assert tasks["add"].request((7, 45), "zh") == "7加45等于几？"
    assert tasks["to_digits"].request(305, "zh") == "把三百零五写成数字。"
    assert tasks["to_digits"].raw(305) == "三百零五=305" and tasks["to_chinese"].raw(305) == "305=三百零五"
    assert tasks["reverse"].raw("night") == "reverse night: thgin"
    assert tasks["reverse"].raw_prompt("night") == "reverse night: "
    with pytest.raises(ValueError, match="language"):
        tasks["add"].request((1, 2), "fr")


def test_a_response_is_right_only_if_it_is_the_answer_up_to_spaces(tasks):
    add = tasks["add"]
    assert add.correct((23, 58), "81") and add.correct((23, 58), " 81\n")
    for wrong in ("80", "081", "81.", "8 1", "", "eighty-one"):
        assert not add.correct((23, 58), wrong), wrong
    assert tasks["to_chinese"].correct(305, "三百零五") and not tasks["to_chinese"].correct(305, "三百五")


def test_examples_interleave_tasks_and_alternate_languages(tasks):
    got = examples("test", per_task=3)
    assert [e.task for e in got] == list(tasks) * 3
    assert [e.language for e in got] == [LANGUAGES[i // len(tasks) % 2] for i in range(len(got))]
    for e in got:
        assert e.problem in tasks[e.task].problems["test"] and e.correct(e.answer())
    assert len(examples("valid")) == len(tasks) * SPLIT_SIZES["valid"]


def test_every_request_and_answer_is_in_the_chat_vocabulary(tasks):
    tokenizer = chat_tokenizer()
    vocabulary = set(tokenizer.ordinary)
    assert len(tokenizer.special_tokens) == len(CHAT_SPECIALS)
    missing = set()
    for task in tasks.values():
        for split in SPLITS:
            for problem in task.problems[split]:
                text = task.answer(problem) + task.raw(problem)
                for language in LANGUAGES:
                    text += task.request(problem, language)
                missing |= set(text) - vocabulary
    assert missing == set()


# --------------------------------------------------------------------------- the chat template

CONVERSATIONS = {
    "en": [{"role": "system", "content": "You answer in one word."},
           {"role": "user", "content": "What is 23+58?"},
           {"role": "assistant", "content": "81"},
           {"role": "user", "content": "Reverse the word night."},
           {"role": "assistant", "content": "thgin"}],
    "zh": [{"role": "system", "content": "用数字写。"},
           {"role": "user", "content": "把三百零五写成数字。"},
           {"role": "assistant", "content": "305"},
           {"role": "user", "content": "用汉字写出305。"},
           {"role": "assistant", "content": "三百零五"}],
}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_chat_template_is_lossless(template, language):
    messages = CONVERSATIONS[language]
    ids = template.encode(messages)
    assert template.decode(ids) == messages
    assert template.decode(template.encode(messages, add_generation_prompt=True)) == messages
    # the layout: role token, text, <|end|>, for each message
    specials = template.tokenizer.special_tokens
    assert ids[0] == specials["<|system|>"] and ids[-1] == template.end_id
    assert ids.count(template.end_id) == len(messages)


def test_prompt_and_response_make_one_conversation(template):
    prompt, response = template.prompt("What is 2+2?"), template.response("4")
    assert prompt[-1] == template.tokenizer.special_tokens["<|assistant|>"]
    assert response[-1] == template.end_id
    assert template.decode(prompt + response) == [{"role": "user", "content": "What is 2+2?"},
                                                 {"role": "assistant", "content": "4"}]


def test_a_cut_off_answer_is_kept(template):
    ids = template.encode(CONVERSATIONS["en"])[:-1]            # the last <|end|> never came
    assert template.decode(ids) == CONVERSATIONS["en"]
    assert template.decode(ids[:-len("thgin")]) == CONVERSATIONS["en"][:-1]   # an empty cut-off turn is dropped


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_conversation_round_trips(template, data):
    """Property: for messages of any roles whose texts use any of the tokenizer's characters
    (English, Chinese, digits, punctuation, line breaks, the empty text), decode(encode(m)) == m."""
    text = st.text(alphabet=st.sampled_from(template.tokenizer.ordinary), max_size=30)
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text})
    messages = data.draw(st.lists(message, max_size=6))
    generation_prompt = data.draw(st.booleans())
    ids = template.encode(messages, add_generation_prompt=generation_prompt)
    assert template.decode(ids) == messages
    assert all(0 <= i < len(template.tokenizer) for i in ids)


@pytest.mark.parametrize("message, error", [
    ({"role": "bot", "content": "hi"}, "role"),
    ({"role": "User", "content": "hi"}, "role"),
    ({"content": "hi"}, "role"),
    ({"role": "user", "content": 42}, "content.*int"),
    ({"role": "user", "content": ["hi"]}, "content.*list"),
    ({"role": "user"}, "content.*NoneType"),
])
def test_bad_messages_raise_clear_errors(template, message, error):
    with pytest.raises(ValueError, match=error):
        template.encode([message])


def test_a_character_outside_the_vocabulary_is_named(template):
    with pytest.raises(KeyError, match="'你' is not in the vocabulary"):
        template.encode([{"role": "user", "content": "你好"}])


def test_malformed_ids_raise_clear_errors(template):
    user, end = template.role_ids["user"], template.end_id
    a = template.tokenizer.encode("a")[0]
    with pytest.raises(ValueError, match="starts inside"):
        template.decode([user, a, template.role_ids["assistant"], a, end])
    with pytest.raises(ValueError, match="outside a turn"):
        template.decode([end])
    with pytest.raises(ValueError, match="outside a turn"):
        template.decode([a, user, a, end])


# --------------------------------------------------------------------------- raw text

@pytest.fixture(scope="module")
def mixture():
    return pretraining_text("train")


def test_pretraining_text_holds_no_held_out_problem(tasks, mixture):
    lines = set(mixture.split("\n"))
    for split in HELD_OUT:
        leaked = lines & set(raw_lines(split))
        assert leaked == set(), f"{split} problems in the pre-training text: {sorted(leaked)[:5]}"
    # nor a held-out number in either numeral form, nor a held-out word reversed
    held_out = {n for split in HELD_OUT for n in tasks["to_digits"].problems[split]}
    numerals = re.compile(r"^(?:(\d+)=[零一二三四五六七八九十百千万]+|([零一二三四五六七八九十百千万]+)=(\d+))$")
    seen = 0
    for line in lines:
        found = numerals.match(line)
        if found:
            n = int(found.group(1) or found.group(3))
            assert n not in held_out, line
            seen += 1
    assert seen > 100
    held_words = {w for split in HELD_OUT for w in tasks["reverse"].problems[split]}
    assert not any(line.startswith("reverse ") and line[8:].split(":")[0] in held_words for line in lines)


def test_pretraining_text_mixes_in_the_share_of_task_lines(tasks, mixture):
    train_lines = set(raw_lines("train"))
    task_chars = sum(len(line) + 1 for line in mixture.split("\n") if line in train_lines)
    assert task_chars / len(mixture) == pytest.approx(TASK_SHARE, abs=0.01)
    lines = mixture.split("\n")
    for name, task in tasks.items():
        raw = {task.raw(p) for p in task.problems["train"]}
        assert sum(line in raw for line in lines) > 1000, f"too few {name} lines"
    with pytest.raises(ValueError, match="share"):
        pretraining_text("train", share=1.0)


def test_few_shot_prompts_show_training_problems_then_the_question(tasks):
    add = tasks["add"]
    problem = add.problems["test"][0]
    prompt = few_shot_prompt(add, problem, shots=3, seed=4)
    *shots, question = prompt.split("\n")
    assert len(shots) == 3 and question == add.raw_prompt(problem) and question.endswith("=")
    for line in shots:
        a, b = map(int, line.split("=")[0].split("+"))
        assert (a, b) in set(add.problems["train"]) and int(line.split("=")[1]) == a + b


# --------------------------------------------------------------------------- SFT's batched sampling

def test_greedy_sample_equals_generate_for_prompts_of_any_length(template):
    torch.manual_seed(0)
    vocab = len(template.tokenizer)
    model = DecoderLM(TransformerConfig(vocab_size=vocab, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=64,
                                        norm="rms", positions="rotary", mlp="swiglu", tie_embeddings=True))
    with torch.no_grad():                      # larger weights: varied, far-from-tied greedy choices
        for p in model.parameters():
            p.mul_(6.0)
    model.eval()
    requests = ["What is 23+58?", "What is 1+2?", "What is 9+9?", "Reverse the word night.", "把三百零五写成数字。",
                "用汉字写出7。", "Write 三百零五 in digits."]
    prompts = [template.prompt(r) for r in requests]
    assert len({len(p) for p in prompts}) < len(prompts) < 2 * len({len(p) for p in prompts})   # some share a length
    greedy = tinylm.Sampler(temperature=0)
    free = [tinylm.generate(model, p, MAX_ANSWER_TOKENS, greedy, stop=[]) for p in prompts]
    # a stop token that some answers meet part-way and others never meet
    counts = torch.bincount(torch.tensor([t for row in free for t in row[1:]]), minlength=vocab)
    stop = int(counts.argmax())
    expected = [tinylm.generate(model, p, MAX_ANSWER_TOKENS, greedy, stop=stop) for p in prompts]
    assert any(len(e) < MAX_ANSWER_TOKENS for e in expected)
    assert sample(model, prompts, MAX_ANSWER_TOKENS, temperature=0.0, stop=stop) == expected
    assert sample(model, prompts, MAX_ANSWER_TOKENS, temperature=0.0) == free
    assert sample(model, prompts, 0) == [[] for _ in prompts]
