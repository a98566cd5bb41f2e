"""The training loop, evaluation in bits per character, and the neural language models."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm import train
from tinylm.mlp_lm import MLPConfig, MLPLanguageModel
from tinylm.rnn import RecurrentConfig, RecurrentLM

TEXT = np.array([int(c) for c in "0123456789" * 40 + "0246813579" * 40], dtype=np.int64) % 10


def full_forward_log2probs(model, ids):
    ids = torch.as_tensor(ids)
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        return (F.log_softmax(logits.double(), -1)[0].gather(-1, ids[1:, None])[:, 0] / math.log(2)).numpy()


def test_mlp_sees_only_its_window():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, embedding=4, hidden=8)).eval()
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = x.clone()
    changed[0, 0] = 9                            # three or more steps back from position 3
    with torch.no_grad():
        a, b = model(x)[0], model(changed)[0]
    assert torch.allclose(a[0, 3:], b[0, 3:]) and not torch.allclose(a[0, :3], b[0, :3])
    assert model.windows(x)[0, 0].tolist() == [10, 10, 1]   # the start token pads the history


@pytest.mark.parametrize("context", [4, 16, 64, 5000])
def test_windowed_evaluation_equals_one_long_forward_for_the_mlp(context):
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=2, embedding=4, hidden=8)).eval()
    ours = train.log2probs(model, TEXT, context=context)
    assert ours.shape == (len(TEXT) - 1,)
    assert np.allclose(ours, full_forward_log2probs(model, TEXT), atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_streamed_evaluation_carries_the_state(cell):
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell=cell, embedding=4, hidden=8)).eval()
    one_stream = train.log2probs(model, TEXT, context=7, streams=1)
    assert np.allclose(one_stream, full_forward_log2probs(model, TEXT), atol=1e-9)
    several = train.log2probs(model, TEXT, context=7, streams=4)
    assert several.shape == one_stream.shape and np.isfinite(several).all()


def test_learning_rate_schedule():
    config = train.TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert config.lr_at(0) == pytest.approx(0.1) and config.lr_at(9) == pytest.approx(1.0)
    assert config.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    rates = [config.lr_at(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("make", [
    lambda: MLPLanguageModel(MLPConfig(vocab_size=10, context=3, embedding=8, hidden=32)),
    lambda: RecurrentLM(RecurrentConfig(vocab_size=10, cell="lstm", embedding=8, hidden=32)),
])
def test_training_learns_a_predictable_text_and_repeats_exactly(make):
    config = train.TrainConfig(steps=120, batch_size=8, context=20, lr=1e-2, warmup=10, eval_every=40,
                               eval_tokens=200, progress=False)
    runs = []
    for _ in range(2):
        train.seed_everything(0)
        model = make()
        runs.append((train.train(model, TEXT, TEXT, config), model))
    (history, model), (again, _) = runs
    assert history.valid_bpc == again.valid_bpc, "the same seed must give the same run"
    assert history.valid_bpc[-1] < 0.5 * math.log2(10), history.valid_bpc
    assert history.step == [40, 80, 120] and history.steps_done == 120
    assert history.train_cpu_seconds > 0
    assert train.bits_per_char(model, TEXT[:200], context=20) == pytest.approx(history.best_valid_bpc)


def test_early_stopping_and_restoring_the_best_weights():
    train.seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, embedding=8, hidden=32))
    noise = np.random.default_rng(0).integers(0, 10, 400)            # nothing to learn: validation gets worse
    config = train.TrainConfig(steps=400, batch_size=8, context=20, lr=3e-2, warmup=1, eval_every=20,
                               eval_tokens=None, patience=3, progress=False)
    history = train.train(model, noise, np.random.default_rng(1).integers(0, 10, 300), config)
    assert history.stopped_early and history.steps_done < 400
    assert history.best_valid_bpc == min(history.valid_bpc)
    assert train.bits_per_char(model, np.random.default_rng(1).integers(0, 10, 300), context=20) == \
        pytest.approx(history.best_valid_bpc)


def test_sampling_is_seeded():
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell="gru", embedding=4, hidden=8))
    a = train.sample(model, [1, 2], 20, generator=torch.Generator().manual_seed(3))
    b = train.sample(model, [1, 2], 20, generator=torch.Generator().manual_seed(3))
    assert a == b and len(a) == 20 and all(0 <= t < 10 for t in a)
    with pytest.raises(ValueError):
        train.sample(model, [], 5)
    mlp = MLPLanguageModel(MLPConfig(vocab_size=10, context=2))
    assert len(train.sample(mlp, [3], 7, context=4)) == 7


def test_history_plot_and_parameter_count():
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell="rnn", embedding=4, hidden=8))
    assert train.count_parameters(model) == 10 * 4 + (4 * 8 + 8 * 8 + 2 * 8) + (8 * 10 + 10)
    history = train.History(step=[1, 2], cpu_seconds=[0.1, 0.2], train_bpc=[3.0, 2.0], valid_bpc=[3.1, 2.5])
    assert history.plot(label="rnn") is not None and history.plot(x="cpu_seconds") is not None


def test_stop_after_runs_the_start_of_the_same_schedule():
    config = train.TrainConfig(steps=90, batch_size=4, context=10, lr=1e-2, warmup=5, eval_every=30,
                               eval_tokens=100, progress=False)
    train.seed_everything(0)
    whole = train.train(MLPLanguageModel(MLPConfig(vocab_size=10, context=2)), TEXT, TEXT, config)
    train.seed_everything(0)
    config.stop_after = 45
    start = train.train(MLPLanguageModel(MLPConfig(vocab_size=10, context=2)), TEXT, TEXT, config)
    assert start.steps_done == 45 and start.step == [30, 45]
    assert start.valid_bpc[0] == whole.valid_bpc[0]
