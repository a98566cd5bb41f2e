"""Bengio's MLP language model: the forward pass written out, parameter counts, chunked scoring,
mixtures, embedding neighbours and the word vocabulary of the word-level model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm.analysis.embeddings import cosine_similarities, nearest_neighbours, pca_2d
from tinylm.evaluation.metrics import mix_log2probs
from tinylm.inference import scoring
from tinylm.models import mlp
from tinylm.models.mlp import MLPConfig, MLPLanguageModel
from tinylm.tokenizers import WORD_UNK, WordTokenizer, words
from tinylm.training import CausalLM, TrainConfig, seed_everything


@pytest.mark.parametrize("direct", [False, True])
def test_forward_is_bengios_equation(direct):
    """y = b + W x + U tanh(d + H x), x the concatenated embeddings of the last n-1 tokens."""
    torch.manual_seed(0)
    config = MLPConfig(vocab_size=7, context=3, d_embed=4, d_hidden=5, direct=direct)
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


@pytest.mark.parametrize("context", [1, 2, 4])
def test_state_carries_the_history_across_pieces(context):
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=7, context=context, d_embed=4, d_hidden=5)).double().eval()
    ids = torch.tensor([[3, 1, 4, 1, 5, 6, 2, 6], [0, 1, 2, 3, 4, 5, 6, 0]])
    with torch.no_grad():
        whole, state = model(ids)
        first, carried = model(ids[:, :3])
        rest, _ = model(ids[:, 3:], carried)
    assert state.shape == (2, context - 1), "the state is the last n - 2 tokens"
    assert torch.equal(state, ids[:, ids.shape[1] - (context - 1):])
    assert torch.allclose(torch.cat([first, rest], dim=1), whole, atol=1e-12)


def bengio_parameter_count(V, context, m, h, direct=False):
    """C: (V + 1) m (a row for the start token); H, d: (n - 1) m h + h; U, b: h V + V; W: (n - 1) m V."""
    return (V + 1) * m + context * m * h + h + h * V + V + (context * m * V if direct else 0)


@pytest.mark.parametrize("config", [
    MLPConfig(vocab_size=84, context=8, d_embed=16, d_hidden=256),
    MLPConfig(vocab_size=84, context=1, d_embed=2, d_hidden=3, direct=True),
    MLPConfig(vocab_size=3001, context=3, d_embed=32, d_hidden=128, dropout=0.1),
])
def test_parameter_count_by_formula(config):
    model = MLPLanguageModel(config)
    expected = bengio_parameter_count(config.vocab_size, config.context, config.d_embed, config.d_hidden,
                                      config.direct)
    assert model.num_parameters() == expected == sum(p.numel() for p in model.parameters())


def test_parameters_grow_linearly_with_the_context():
    counts = [MLPLanguageModel(MLPConfig(vocab_size=84, context=c, d_embed=16, d_hidden=256)).num_parameters()
              for c in (1, 2, 3, 4)]
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
    X = flat @ rotation
    points = pca_2d(X)
    assert points.shape == (200, 2)
    assert np.allclose(np.abs(np.corrcoef(points.T, flat[:, :2].T)[[0, 1], [2, 3]]), 1.0, atol=1e-3)
    # The sign rule: the largest loading of each component is positive (it depends on the
    # directions only, so mirrored data gives the mirrored picture, whatever sign the SVD picks).
    Xc = X - X.mean(axis=0)
    loadings = np.linalg.lstsq(Xc, points, rcond=None)[0]             # (5, 2): points = Xc @ loadings
    assert np.allclose(Xc @ loadings, points, atol=1e-9)
    for axis in range(2):
        assert loadings[np.argmax(np.abs(loadings[:, axis])), axis] > 0
    assert np.allclose(pca_2d(-X), -points)
    assert np.allclose(pca_2d(X + 5.0), points), "the rows are centred first"


def test_words_and_the_vocabulary_cut():
    text = "To be, or not to be:\nthat is the question. O'er 1599 hills!"
    tokens = words(text)
    assert tokens == ["to", "be", "or", "not", "to", "be", "that", "is", "the", "question", "o'er", "hills"]
    vocab = WordTokenizer.most_frequent(tokens, 3)
    assert vocab.symbols == ["be", "to", "hills", WORD_UNK]              # counts 2, 2, then alphabetical
    ids = vocab.encode(["to", "be", "ghost"])                             # a list of words is taken as is
    assert ids == [1, 0, vocab.index[WORD_UNK]] and all(type(i) is int for i in ids)
    assert vocab.encode(text) == vocab.encode(tokens), "a text is cut into words first"
    assert vocab.decode(ids) == "to be <unk>"
    assert WordTokenizer.most_frequent(tokens + [WORD_UNK] * 10, 1).symbols == ["be", WORD_UNK]
    with pytest.raises(ValueError):
        WordTokenizer.most_frequent(tokens, 0)


def test_a_word_model_trains_on_word_ids():
    tokens = words("the cat sat on the mat and the dog sat on the log " * 30)
    vocab = WordTokenizer.most_frequent(tokens, 6)
    ids = np.asarray(vocab.encode(tokens))
    seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=len(vocab), context=2, d_embed=4, d_hidden=16))
    config = TrainConfig(steps=60, batch_size=8, context=12, lr=3e-2, warmup=5, eval_every=60, progress=False)
    history = tinylm.train(model, CausalLM(ids, ids, eval_tokens=None), config)
    assert history.unit == "bpc" and history.step == [60]
    assert history.valid["bpc"][-1] < 0.6 * math.log2(len(vocab))
    assert history.valid["bpc"][-1] == pytest.approx(float(-np.mean(tinylm.score(model, ids))), rel=1e-9)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids[None, :24]))
    assert F.softmax(logits, -1).sum(-1).allclose(torch.ones(1, 24, dtype=logits.dtype))


# The MLP's own scorer computes LOGITS_PER_CHUNK // V predictions at a time (at least 64):
# with V = 10 and 300 tokens, 640 gives chunks of 64 (five of them), 1000 chunks of 100, and
# the default one chunk.
@pytest.mark.parametrize("context, logits_per_chunk", [(1, 640), (3, 640), (6, 1), (6, 1000), (4, 10_000),
                                                       (2, mlp.LOGITS_PER_CHUNK)])
def test_log2probs_in_chunks_equal_one_long_forward(context, logits_per_chunk, monkeypatch):
    monkeypatch.setattr(mlp, "LOGITS_PER_CHUNK", logits_per_chunk)
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=context, d_embed=4, d_hidden=8, dropout=0.5)).double()
    ids = np.random.default_rng(context).integers(0, 10, size=300)
    ours = tinylm.score(model, ids)
    with torch.no_grad():
        logits, _ = model.eval()(torch.as_tensor(ids)[None, :-1])
    model.train()
    full = (F.log_softmax(logits[0], -1).gather(-1, torch.as_tensor(ids[1:])[:, None])[:, 0] / math.log(2)).numpy()
    assert ours.shape == (len(ids) - 1,) and np.allclose(ours, full, atol=1e-12)
    with torch.no_grad():                      # the general method: overlapping windows of 32 tokens
        windowed = scoring._windows(model.eval(), torch.as_tensor(ids), 32)
    model.train()
    assert np.allclose(ours, windowed, atol=1e-12)
    assert model.training, "scoring must leave the model in the mode it found it"
    assert np.array_equal(tinylm.score(model, ids), ours), "and without dropout: the same numbers again"


def test_generation_with_and_without_the_cache_agree():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=4, d_embed=4, d_hidden=8, dropout=0.5))
    sampler = tinylm.Sampler(temperature=1.0, seed=5)
    cached = tinylm.generate(model, [1, 2, 3], 40, sampler)
    assert cached == tinylm.generate(model, [1, 2, 3], 40, sampler, use_cache=False)
    assert len(cached) == 40 and set(cached) <= set(range(10))
    assert model.training, "generate puts the model's mode back"
