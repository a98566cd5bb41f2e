"""Chinese numerals and the numeral task's data (tinylm.data.numerals), span corruption
(tinylm.training.span_corruption), teacher forcing and exact match (tinylm.training.seq2seq)."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.data.numerals import (Example, chinese_numeral, digit_count, numeral_example, numeral_tokenizer,
                                  parse_chinese_numeral, random_number, repeat_rare, split_numbers)
from tinylm.evaluation.metrics import accuracy_by, char_accuracy
from tinylm.models.transformer import EncoderDecoder, TransformerConfig
from tinylm.tokenizers import SEQ2SEQ_SPECIALS
from tinylm.training import Seq2Seq, TrainConfig, seed_everything
from tinylm.training import seq2seq
from tinylm.training.batches import pad
from tinylm.training.seq2seq import EXTRA_TOKENS, exact_match, make_batch, predict, sequence_loss, teacher_forcing
from tinylm.training.span_corruption import apply_noise_mask, noise_mask, sentinel, span_corrupt, span_uncorrupt

TOK = numeral_tokenizer()
PAD, BOS, EOS = TOK.pad_id, TOK.bos_id, TOK.eos_id

KNOWN = {
    0: "零", 1: "一", 2: "二", 9: "九", 10: "十", 11: "十一", 15: "十五", 20: "二十", 99: "九十九",
    100: "一百", 101: "一百零一", 105: "一百零五", 110: "一百一十", 111: "一百一十一", 120: "一百二十", 220: "二百二十",
    1000: "一千", 1005: "一千零五", 1010: "一千零一十", 1050: "一千零五十", 1100: "一千一百", 1234: "一千二百三十四",
    2002: "二千零二", 9999: "九千九百九十九",
    10000: "一万", 10001: "一万零一", 10010: "一万零一十", 10300: "一万零三百", 11000: "一万一千",
    20000: "二万", 30405: "三万零四百零五",
    100000: "十万", 100001: "十万零一", 110000: "十一万", 150020: "十五万零二十", 999999: "九十九万九千九百九十九",
    1000000: "一百万", 1010000: "一百零一万", 1100000: "一百一十万", 2000300: "二百万零三百",
    10000000: "一千万", 10000001: "一千万零一", 10001000: "一千万一千", 10100000: "一千零一十万",
    20300400: "二千零三十万零四百", 12345678: "一千二百三十四万五千六百七十八", 99999999: "九千九百九十九万九千九百九十九",
}


# ----------------------------------------------------------------------------- Chinese numerals

@pytest.mark.parametrize("n, text", KNOWN.items())
def test_known_numerals(n, text):
    assert chinese_numeral(n) == text
    assert parse_chinese_numeral(text) == n


def test_round_trip_over_random_numbers_of_every_length():
    rng = random.Random(0)
    for _ in range(20_000):
        d = rng.randint(1, 8)
        n = rng.randrange(10 ** (d - 1) if d > 1 else 0, 10 ** d)
        text = chinese_numeral(n)
        assert parse_chinese_numeral(text) == n, (n, text)
        assert "零零" not in text and "两" not in text and not text.startswith("一十"), (n, text)
        assert n == 0 or not text.endswith("零"), (n, text)


def test_every_number_below_ten_thousand_is_distinct_and_parses():
    texts = [chinese_numeral(n) for n in range(10_000)]
    assert len(set(texts)) == 10_000
    assert [parse_chinese_numeral(t) for t in texts] == list(range(10_000))


@pytest.mark.parametrize("bad", [-1, 10 ** 8, 3.0, True, "12"])
def test_chinese_numeral_refuses_what_it_cannot_write(bad):
    with pytest.raises((TypeError, ValueError)):
        chinese_numeral(bad)


@pytest.mark.parametrize("text, words", [
    ("一十五", "standard way to write 15: that is '十五'"),
    ("一百三", "that is '一百零三'"),
    ("一万三百", "that is '一万零三百'"),
    ("二千零三十零万", "that is"),
    ("两百", "not a numeral character"),
    ("万", "needs a number before it"),
    ("一万二万", "more than once"),
    ("三四", "two digits"),
    ("百", "needs a digit"),
    ("一十百", "as large or larger"),
    ("", "non-empty"),
])
def test_parse_refuses_non_standard_numerals(text, words):
    with pytest.raises(ValueError, match=words):
        parse_chinese_numeral(text)


# ----------------------------------------------------------------------------- the data

def test_vocabulary_starts_with_the_specials():
    vocab = numeral_tokenizer("数字：")
    assert vocab.symbols[:3] == list(SEQ2SEQ_SPECIALS) and (PAD, BOS, EOS) == (0, 1, 2)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2) and vocab.unk_id is None
    assert vocab.decode(vocab.encode("数字：一百零五")) == "数字：一百零五"
    assert vocab.decode([BOS, 3 + 4, 3 + 2, EOS, PAD, PAD]) == "[BOS]42[EOS]", "padding is left out"
    assert len(vocab) == 3 + 10 + 14 + 3
    with pytest.raises(KeyError, match="not in the vocabulary"):
        vocab.encode("两")


def test_numeral_example_and_its_reverse():
    assert numeral_example(105, "数字：") == Example("数字：一百零五", "105", 105)
    assert numeral_example(105, "中文：", reverse=True) == Example("中文：105", "一百零五", 105)
    vocab = numeral_tokenizer()
    src, tgt = numeral_example(20, "").encode(vocab)
    assert isinstance(src, list) and isinstance(tgt, list)
    assert vocab.decode(src) == "二十" and vocab.decode(tgt) == "20" and tgt == [3 + 2, 3 + 0]


def test_split_numbers_is_disjoint_stratified_and_repeatable():
    train_n, valid_n, test_n = split_numbers(300, 40, 20, seed=3)
    assert not set(train_n) & set(test_n) and not set(train_n) & set(valid_n) and not set(valid_n) & set(test_n)
    assert len(set(train_n)) == len(train_n)
    by_test = {d: sum(digit_count(n) == d for n in test_n) for d in range(1, 9)}
    assert by_test == {1: 2, 2: 18, 3: 40, 4: 40, 5: 40, 6: 40, 7: 40, 8: 40}
    assert sum(digit_count(n) == 1 for n in train_n) == 10 - 2 - 2
    assert all(0 <= n < 10 ** 8 for n in train_n)
    assert split_numbers(300, 40, 20, seed=3) == (train_n, valid_n, test_n)
    assert split_numbers(300, 40, 20, seed=4)[2] != test_n


def test_random_number_has_its_digits_and_its_zeros():
    rng = np.random.default_rng(0)
    for d in range(1, 9):
        assert {digit_count(random_number(d, rng)) for _ in range(200)} == {d}
    assert {random_number(1, rng) for _ in range(300)} == set(range(10))
    zeros = {rate: np.mean([str(random_number(8, rng, rate))[1:].count("0") / 7 for _ in range(2000)])
             for rate in (0.1, 0.5)}
    assert abs(zeros[0.1] - 0.1) < 0.02 and abs(zeros[0.5] - 0.5) < 0.03


def test_zero_rate_changes_the_split():
    plain, _, _ = split_numbers(200, 0, 0, seed=1)
    zeros, _, _ = split_numbers(200, 0, 0, seed=1, zero_rate=0.5)
    long = [n for n in zeros if digit_count(n) == 8]
    assert len(long) == len(set(long)) == 200
    mixed, _, _ = split_numbers(200, 0, 0, seed=1, zero_rate=(0.1, 0.5))
    count = [sum(str(n).count("0") for n in ns if digit_count(n) == 8) for ns in (plain, mixed, zeros)]
    assert count[2] > 3 * count[0] and count[0] < count[1] < count[2], count


def test_repeat_rare_only_repeats():
    numbers = [3, 7, 12, 45, 46, 100, 200, 300]
    out = repeat_rare(numbers, 3)
    assert sorted(set(out)) == sorted(numbers)
    assert [digit_count(n) for n in out].count(1) == 3 and [digit_count(n) for n in out].count(3) == 3
    assert repeat_rare(numbers, 1) == numbers


# ----------------------------------------------------------------------------- span corruption

PARTY = "Thank you for inviting me to your party last week .".split()


def test_apply_noise_mask_reproduces_the_t5_papers_figure():
    mask = [w in ("for", "inviting", "last") for w in PARTY]
    inputs, targets = apply_noise_mask(PARTY, mask)
    assert " ".join(inputs) == "Thank you <X0> me to your party <X1> week ."
    assert " ".join(targets) == "<X0> for inviting <X1> last <X2>"
    assert span_uncorrupt(inputs, targets) == PARTY


@pytest.mark.parametrize("length, rate, mean_span", [(10, 0.15, 3), (50, 0.15, 3), (200, 0.15, 3), (40, 0.5, 2),
                                                     (2, 0.15, 3), (30, 0.3, 1)])
def test_noise_mask_hides_the_right_amount_in_separate_spans(length, rate, mean_span):
    g = torch.Generator().manual_seed(length)
    for roll in (False, True):
        for _ in range(20):
            mask = noise_mask(length, rate, mean_span, g, roll=roll)
            n_noise = min(max(1, round(length * rate)), length - 1)
            assert len(mask) == length and sum(mask) == n_noise
            starts = sum(m and (i == 0 or not mask[i - 1]) for i, m in enumerate(mask))
            spans = min(max(1, round(n_noise / mean_span)), length - n_noise)
            if not roll:
                assert not mask[0] and mask[-1] and starts == spans
            else:                    # rolling may cut the last span in two, at the ends
                assert starts in (spans, spans + 1)


def test_span_corrupt_round_trips_and_numbers_its_sentinels():
    g = torch.Generator().manual_seed(0)
    text = list("今天下午我们在北京大学开了一个关于语言模型的讨论会，大家都很高兴。")
    seen = set()
    for _ in range(50):
        inputs, targets = span_corrupt(text, 0.15, 3, g)
        assert span_uncorrupt(inputs, targets) == text
        sentinels = [t for t in inputs if str(t).startswith("<X")]
        assert sentinels == [sentinel(i) for i in range(len(sentinels))]
        assert [t for t in targets if str(t).startswith("<X")] == [sentinel(i) for i in range(len(sentinels) + 1)]
        assert len(inputs) + len(targets) == len(text) + 2 * len(sentinels) + 1
        seen.add(tuple(inputs))
    assert len(seen) > 10
    a = span_corrupt(text, generator=torch.Generator().manual_seed(5))
    assert a == span_corrupt(text, generator=torch.Generator().manual_seed(5))


def test_span_corruption_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        span_corrupt(["a"])
    with pytest.raises(ValueError, match="rate"):
        noise_mask(10, rate=1.5)
    with pytest.raises(ValueError, match="mask of"):
        apply_noise_mask(["a", "b"], [True])


# ----------------------------------------------------------------------------- batches and the loss

def test_pad_batch_and_teacher_forcing():
    ids, mask = pad([[5, 6, 7], [8]], PAD)
    assert ids.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    decoder_in, labels = teacher_forcing([[5, 6], [7]], BOS, EOS, PAD)
    assert decoder_in.tolist() == [[BOS, 5, 6], [BOS, 7, PAD]]
    assert labels.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    with pytest.raises(ValueError, match="no sequences"):
        pad([])


def small_model(seed=0, **overrides):
    seed_everything(seed)
    vocab = numeral_tokenizer()
    config = dict(vocab_size=len(vocab), d_model=32, n_heads=2, n_layers=1, max_len=16, pad_id=vocab.pad_id,
                  bos_id=vocab.bos_id, eos_id=vocab.eos_id)
    return EncoderDecoder(TransformerConfig(**{**config, **overrides})), vocab


def test_make_batch_takes_the_special_ids_from_the_config():
    model, vocab = small_model(pad_id=PAD, bos_id=EOS, eos_id=BOS)      # swapped on purpose
    batch = make_batch([([7, 8], [5]), ([9], [6, 5])], model.config)
    assert batch.src.tolist() == [[7, 8], [9, PAD]] and batch.src_mask.tolist() == [[True, True], [True, False]]
    assert batch.decoder_in.tolist() == [[EOS, 5, PAD], [EOS, 6, 5]]
    assert batch.labels.tolist() == [[5, BOS, PAD], [6, 5, BOS]]


def test_sequence_loss_ignores_padding():
    model, vocab = small_model()
    pairs = [numeral_example(n).encode(vocab) for n in (12345678, 7, 105)]
    batch = make_batch(pairs, model.config)
    assert batch.src.shape[0] == 3 and batch.labels.shape == batch.decoder_in.shape
    loss = sequence_loss(model, batch)
    logits, _ = model(batch.decoder_in, model.encode(batch.src, batch.src_mask))
    real = batch.labels != PAD
    by_hand = F.cross_entropy(logits[real], batch.labels[real])
    assert abs(loss.item() - by_hand.item()) < 1e-6
    # a row's loss does not depend on the other rows' padding
    alone = [sequence_loss(model, make_batch([p], model.config)).item() for p in pairs]
    counts = [len(t) + 1 for _, t in pairs]
    assert abs(loss.item() - sum(a * c for a, c in zip(alone, counts)) / sum(counts)) < 1e-5


class Echo:
    """A stand-in for tinylm.generate: 'generates' the answers it was given, whatever the source."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, model, sources, max_new_tokens, sampler=None, stop=None, use_cache=True):
        self.calls.append((sources, max_new_tokens, sampler, use_cache))
        out, self.answers = self.answers[: len(sources)], self.answers[len(sources):]
        return out


def test_exact_match_counts_whole_answers_only(monkeypatch):
    pairs = [([4], [5, 6]), ([4, 4], [7]), ([4], [8, 9])]
    echo = Echo([[5, 6], [7, 7], [8]])
    monkeypatch.setattr(seq2seq, "generate", echo)
    assert exact_match("a model", pairs, batch_size=2) == pytest.approx(1 / 3)
    assert [c[0] for c in echo.calls] == [[[4], [4, 4]], [[4]]], "batches of at most batch_size sources"
    assert all(c[1] == 2 + EXTRA_TOKENS and c[2] == tinylm.GREEDY for c in echo.calls)
    echo = Echo([[5, 6], [7], [8, 9]])
    monkeypatch.setattr(seq2seq, "generate", echo)
    assert exact_match("a model", pairs, max_new_tokens=9) == 1.0 and echo.calls[0][1] == 9
    with pytest.raises(ValueError, match="no pairs"):
        exact_match("a model", [])


def test_char_accuracy():
    assert char_accuracy(["12", "7", "3"], ["12", "8", "305"]) == 3 / 6
    assert char_accuracy(["1299"], ["12"]) == 1.0
    assert char_accuracy(["106177"], ["100617"]) == 3 / 6          # 1, 0 and the last 7 agree


def test_accuracy_by():
    got = accuracy_by(["1", "22", "33", "4"], ["1", "22", "30", "5"], [1, 2, 2, 1])
    assert got == {1: (0.5, 2), 2: (0.5, 2)}


def test_predict_in_batches_equals_one_by_one():
    model, vocab = small_model(seed=1)
    sources = [numeral_example(n).encode(vocab)[0] for n in (3, 10010, 20300400, 105, 99)]
    together = predict(model, sources, max_new_tokens=6, batch_size=3)
    alone = [predict(model, [s], max_new_tokens=6)[0] for s in sources]
    assert together == alone and all(len(answer) <= 6 for answer in together)
    assert predict(model, sources, max_new_tokens=6, use_cache=False) == together
    assert together == tinylm.generate(model, sources, 6, tinylm.GREEDY)


@pytest.fixture
def one_thread():
    """A model this small trains fastest on one thread (and a busy machine makes more threads slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_learns_held_out_numbers(one_thread):
    train_n, _, test_n = split_numbers(400, 50, 0, max_digits=3, seed=1)
    model, vocab = small_model()
    pairs = [numeral_example(n).encode(vocab) for n in train_n]
    test = [numeral_example(n).encode(vocab) for n in test_n]
    assert exact_match(model, test) < 0.05
    # lr 3e-3: at 1e-2 (the old test's rate) the run is erratic, from 0.04 to 0.97 exact match on
    # the held-out numbers depending on the seed and on the CPU's rounding; at 3e-3 every seed
    # tried reaches 1.0.
    config = TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup=20, eval_every=100, restore_best=False,
                         progress=False)
    history = tinylm.train(model, Seq2Seq(pairs, test[:20]), config, snapshots=(30,))
    assert (history.unit, history.monitor) == ("nats", "exact_match")
    assert history.steps_done == 300 and history.step == [100, 200, 300]
    assert history.train_loss[-1] < 0.3 * history.train_loss[0]
    assert len(history.valid["exact_match"]) == 3 and not model.training
    assert history.valid["exact_match"][-1] == exact_match(model, test[:20])
    assert exact_match(model, test) > 0.9
    model.load_state_dict(history.snapshots[30])
    assert list(history.snapshots) == [30] and exact_match(model, test) < 0.2
