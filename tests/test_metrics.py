import numpy as np
import pytest

from tinylm.evaluation import metrics
from tinylm.tokenizers import CharTokenizer


def test_bits_and_perplexity():
    log2p = np.log2([0.5, 0.25, 0.125])
    assert metrics.bits_per_char(log2p) == pytest.approx(2.0)
    assert metrics.perplexity(log2p) == pytest.approx(4.0)
    assert metrics.bits_per_char(log2p, n_chars=6) == pytest.approx(1.0)


def test_scored_chars_are_those_of_every_token_but_the_first():
    chars = CharTokenizer.from_texts(["hello world"])
    assert metrics.scored_chars(chars, chars.encode("hello")) == 4
    from tinylm.tokenizers import BPETokenizer

    bpe = BPETokenizer.train("hello hello hello world", 3)
    ids = bpe.encode("hello world")
    first = bpe.decode(ids[:1])
    assert len(first) > 1, "the example needs a first token of several characters"
    assert metrics.scored_chars(bpe, ids) == len("hello world") - len(first)
    with pytest.raises(ValueError, match="fewer than two tokens"):
        metrics.scored_chars(chars, chars.encode("h"))


def test_compressor_is_conditioned_on_training_text():
    rng = np.random.default_rng(0)
    train = "".join(rng.choice(list("abcdefgh"), size=20_000))
    for name in metrics.COMPRESSORS:
        repeated = metrics.compressor_bpc(train, train[:5_000], name)   # already seen: cheap
        fresh = metrics.compressor_bpc(train, "".join(rng.choice(list("abcdefgh"), size=5_000)), name)
        assert fresh > 2.9               # 8 equiprobable letters need 3 bits each
        if name == "xz":                 # a 64 MB window: a repeat costs almost nothing
            assert repeated < 0.5


def test_errors():
    with pytest.raises(ValueError, match="unknown compressor"):
        metrics.compressor_bpc("a", "b", "zip")
    with pytest.raises(ValueError, match="empty"):
        metrics.compressor_bpc("a", "", "gzip")
    with pytest.raises(KeyError, match="not in the vocabulary"):
        CharTokenizer("ab").encode("abc")
