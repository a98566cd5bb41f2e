"""Bengio's MLP language model: the forward pass written out, parameter counts, chunked scoring,
mixtures, embedding neighbours and the word vocabulary of the word-level model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm import train
from tinylm.mlp_lm import (UNK, MLPConfig, MLPLanguageModel, cosine_similarities, encode_words, log2probs,
                           lowercase_words, mix_log2probs, nearest_neighbours, parameter_count, pca_2d,
                           word_vocabulary)


@pytest.mark.parametrize("direct", [False, True])
def test_forward_is_bengios_equation(direct):
    """y = b + W x + U tanh(d + H x), x the concatenated embeddings of the last n-1 tokens."""
    torch.manual_seed(0)
    config = MLPConfig(vocab_size=7, context=3, embedding=4, hidden=5, direct=direct)
    model = MLPLanguageModel(config).double().eval()
    ids = [3, 1, 4, 1, 5, 6]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0].numpy()
    C = model.embed.weight.detach().numpy()
    H, d = model.hidden.weight.detach().numpy(), model.hidden.bias.detach().numpy()
    U, b = model.out.weight.detach().numpy(), model.out.bias.detach().numpy()
    padded = [config.vocab_size] * (config.context - 1) + ids            # the start token
    for t in range(len(ids)):
        x = np.concatenate([C[i] for i in padded[t:t + config.context]])
        y = b + U @ np.tanh(d + H @ x)
        if direct:
            y = y + model.direct.weight.detach().numpy() @ x
        assert np.allclose(logits[t], y, atol=1e-12)


@pytest.mark.parametrize("config", [
    MLPConfig(vocab_size=84, context=8, embedding=16, hidden=256),
    MLPConfig(vocab_size=84, context=1, embedding=2, hidden=3, direct=True),
    MLPConfig(vocab_size=3001, context=3, embedding=32, hidden=128, dropout=0.1),
])
def test_parameter_count_by_formula(config):
    assert parameter_count(config) == train.count_parameters(MLPLanguageModel(config))


def test_parameters_grow_linearly_with_the_context():
    counts = [parameter_count(MLPConfig(vocab_size=84, context=c, embedding=16, hidden=256)) for c in (1, 2, 3, 4)]
    steps = np.diff(counts)
    assert len(set(steps.tolist())) == 1 and steps[0] == 16 * 256


def test_mixture_of_two_models():
    rng = np.random.default_rng(0)
    p, q = rng.uniform(0.01, 1, size=50), rng.uniform(0.01, 1, size=50)
    mixed = mix_log2probs(np.log2(p), np.log2(q), 0.3)
    assert np.allclose(mixed, np.log2(0.3 * p + 0.7 * q))
    assert np.array_equal(mix_log2probs(np.log2(p), np.log2(q), 1.0), np.log2(p))
    assert np.array_equal(mix_log2probs(np.log2(p), np.log2(q), 0.0), np.log2(q))
    tiny = mix_log2probs(np.array([-3000.0]), np.array([-3001.0]), 0.5)    # 2^-3000 underflows a float
    assert np.isfinite(tiny).all() and tiny[0] == pytest.approx(-3000 + math.log2(0.75))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        mix_log2probs(p, q, 1.5)
    with pytest.raises(ValueError, match="different texts"):
        mix_log2probs(p, q[:3], 0.5)


def test_cosine_similarities_and_neighbours():
    vectors = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    S = cosine_similarities(vectors)
    assert np.allclose(np.diag(S), 1.0) and np.allclose(S, S.T)
    assert S[0, 3] == pytest.approx(-1.0) and S[0, 2] == pytest.approx(0.0)
    assert nearest_neighbours(vectors, 0, k=4) == [4, 1, 2, 3]          # the tie of 4 with itself comes first
    assert nearest_neighbours(vectors, 0, k=2, among=[2, 3, 0]) == [2, 3]
    assert nearest_neighbours(vectors, 1, k=1) == [0]                 # 0 and 4 tie: the smaller row


def test_pca_keeps_the_main_directions_and_a_fixed_sign():
    rng = np.random.default_rng(1)
    flat = np.c_[rng.normal(0, 10, 200), rng.normal(0, 3, 200), rng.normal(0, 0.01, (200, 3))]
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    points = pca_2d(flat @ rotation)
    assert points.shape == (200, 2)
    assert np.allclose(np.abs(np.corrcoef(points.T, flat[:, :2].T)[[0, 1], [2, 3]]), 1.0, atol=1e-3)
    assert np.allclose(pca_2d(-(flat @ rotation)), points)            # the same picture for mirrored data
    for axis in range(2):
        assert points[np.argmax(np.abs(points[:, axis])), axis] > 0


def test_words_and_the_vocabulary_cut():
    words = lowercase_words("To be, or not to be:\nthat is the question. O'er 1599 hills!")
    assert words == ["to", "be", "or", "not", "to", "be", "that", "is", "the", "question", "o'er", "hills"]
    vocab = word_vocabulary(words, 3)
    assert vocab.symbols == ["be", "to", "hills", UNK]                   # counts 2, 2, then alphabetical
    ids = encode_words(["to", "be", "ghost"], vocab)
    assert ids.tolist() == [1, 0, vocab.index[UNK]] and ids.dtype == np.int64
    assert word_vocabulary(words + [UNK] * 10, 1).symbols == ["be", UNK]
    with pytest.raises(ValueError):
        word_vocabulary(words, 0)


def test_a_word_model_trains_on_word_ids():
    words = lowercase_words("the cat sat on the mat and the dog sat on the log " * 30)
    vocab = word_vocabulary(words, 6)
    ids = encode_words(words, vocab)
    train.seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=len(vocab), context=2, embedding=4, hidden=16))
    config = train.TrainConfig(steps=60, batch_size=8, context=12, lr=3e-2, warmup=5, eval_every=60,
                               eval_tokens=None, progress=False)
    history = train.train(model, ids, ids, config)
    assert history.valid_bpc[-1] < 0.6 * math.log2(len(vocab))
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids[None, :24]))
    assert F.softmax(logits, -1).sum(-1).allclose(torch.ones(1, 24, dtype=logits.dtype))


@pytest.mark.parametrize("context, chunk", [(1, 5), (3, 7), (6, 1), (6, 64), (4, 10_000), (2, None)])
def test_log2probs_in_chunks_equal_one_long_forward(context, chunk):
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=context, embedding=4, hidden=8)).double()
    ids = np.random.default_rng(context).integers(0, 10, size=300)
    ours = log2probs(model, ids, chunk=chunk)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids)[None, :-1])
    full = (F.log_softmax(logits[0], -1).gather(-1, torch.as_tensor(ids[1:])[:, None])[:, 0] / math.log(2)).numpy()
    assert ours.shape == (len(ids) - 1,) and np.allclose(ours, full, atol=1e-12)
    assert np.allclose(ours, train.log2probs(model, ids, context=32), atol=1e-12)
    assert model.training, "scoring must leave the model in the mode it found it"
