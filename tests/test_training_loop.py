"""The training loop (tinylm.train with the CausalLM objective), scoring in bits per character,
and the neural language models it trains."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tinylm
from tinylm.evaluation import metrics
from tinylm.models.base import LanguageModel
from tinylm.models.mlp import MLPConfig, MLPLanguageModel
from tinylm.models.rnn import RecurrentConfig, RecurrentLM
from tinylm.training import CausalLM, History, TrainConfig, loop, seed_everything

TEXT = np.array([int(c) for c in "0123456789" * 40 + "0246813579" * 40], dtype=np.int64) % 10


def full_forward_log2probs(model, ids):
    ids = torch.as_tensor(ids)
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        return (F.log_softmax(logits.double(), -1)[0].gather(-1, ids[1:, None])[:, 0] / math.log(2)).numpy()


class WindowsOnly(LanguageModel, nn.Module):
    """A model that follows the protocol and nothing more: no fast scorer of its own, so
    tinylm.score reads it in overlapping windows."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids, state=None):
        return self.inner(ids)[0], None


def test_mlp_sees_only_its_window():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, d_embed=4, d_hidden=8)).eval()
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = x.clone()
    changed[0, 0] = 9                            # three or more steps back from position 3
    with torch.no_grad():
        a, b = model(x)[0], model(changed)[0]
    assert torch.allclose(a[0, 3:], b[0, 3:]) and not torch.allclose(a[0, :3], b[0, :3])
    assert model.windows(x)[0, 0].tolist() == [10, 10, 1]   # the start token pads the history


@pytest.mark.parametrize("context", [4, 16, 64, 5000])
def test_windowed_scoring_equals_one_long_forward_for_the_mlp(context):
    torch.manual_seed(0)
    mlp = MLPLanguageModel(MLPConfig(vocab_size=10, context=2, d_embed=4, d_hidden=8)).eval()
    model = WindowsOnly(mlp)
    assert not hasattr(model, "log2probs")
    ours = tinylm.score(model, TEXT, context=context)
    assert ours.shape == (len(TEXT) - 1,)
    assert np.allclose(ours, full_forward_log2probs(mlp, TEXT), atol=1e-10)
    assert np.allclose(ours, tinylm.score(mlp, TEXT), atol=1e-10), "the MLP's own scorer gives the same"


def test_windows_cover_every_target_once():
    from tinylm.inference.scoring import window_plan

    for n, context in [(1, 4), (7, 4), (100, 16), (5, 5000), (33, 2)]:
        covered = [t for start, keep, length in window_plan(n, context) for t in range(start + keep, start + length)]
        assert covered == list(range(n)), (n, context)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_streamed_scoring_carries_the_state(cell):
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell=cell, d_embed=4, d_state=8)).eval()
    one_stream = tinylm.score(model, TEXT, context=7, streams=1)
    assert np.allclose(one_stream, full_forward_log2probs(model, TEXT), atol=1e-9)
    several = tinylm.score(model, TEXT, context=7, streams=4)
    assert several.shape == one_stream.shape and np.isfinite(several).all()
    assert not np.allclose(several, one_stream), "each stream's first token goes without its past"


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert config.lr_at(0) == pytest.approx(0.1) and config.lr_at(9) == pytest.approx(1.0)
    assert config.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    rates = [config.lr_at(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_the_config_is_frozen_and_checked():
    config = TrainConfig(steps=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.stop_after = 10
    assert dataclasses.replace(config, stop_after=10).last_step == 10 and config.last_step == 100
    with pytest.raises(ValueError, match="stop_after"):
        TrainConfig(steps=100, stop_after=101)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("make", [
    lambda: MLPLanguageModel(MLPConfig(vocab_size=10, context=3, d_embed=8, d_hidden=32)),
    lambda: RecurrentLM(RecurrentConfig(vocab_size=10, cell="lstm", d_embed=8, d_state=32)),
])
def test_training_learns_a_predictable_text_and_repeats_exactly(make):
    config = TrainConfig(steps=120, batch_size=8, context=20, lr=1e-2, warmup=10, eval_every=40, progress=False)
    runs = []
    for _ in range(2):
        seed_everything(0)
        model = make()
        runs.append((tinylm.train(model, CausalLM(TEXT, TEXT, eval_tokens=200), config), model))
    (history, model), (again, _) = runs
    assert history.valid == again.valid and history.train_loss == again.train_loss, \
        "the same seed must give the same run"
    assert (history.unit, history.monitor) == ("bpc", "bpc")
    assert history.valid["bpc"][-1] < 0.5 * math.log2(10), history.valid
    assert history.step == [40, 80, 120] and history.steps_done == 120 and len(history.train_loss) == 3
    assert history.train_cpu_seconds > 0 and history.cpu_seconds[-1] > 0
    assert history.best_valid == min(history.valid["bpc"])
    assert history.best_step == history.step[history.valid["bpc"].index(history.best_valid)]
    assert not model.training, "the model is left in evaluation mode"
    assert metrics.bits_per_char(tinylm.score(model, TEXT[:200], context=20)) == pytest.approx(history.best_valid)


def test_early_stopping_and_restoring_the_best_weights():
    seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, d_embed=8, d_hidden=32))
    noise = np.random.default_rng(0).integers(0, 10, 400)            # nothing to learn: validation gets worse
    valid = np.random.default_rng(1).integers(0, 10, 300)
    config = TrainConfig(steps=400, batch_size=8, context=20, lr=3e-2, warmup=1, eval_every=20,
                         patience=3, progress=False)
    history = tinylm.train(model, CausalLM(noise, valid, eval_tokens=None), config)
    assert history.stopped_early and history.steps_done < 400
    assert history.steps_done == history.step[-1] == history.best_step + 3 * 20
    assert history.best_valid == min(history.valid["bpc"]) < history.valid["bpc"][-1]
    assert metrics.bits_per_char(tinylm.score(model, valid, context=20)) == pytest.approx(history.best_valid)


def test_without_restoring_the_last_weights_stay():
    seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, d_embed=8, d_hidden=32))
    noise = np.random.default_rng(0).integers(0, 10, 400)
    valid = np.random.default_rng(1).integers(0, 10, 300)
    config = TrainConfig(steps=100, batch_size=8, context=20, lr=3e-2, warmup=1, eval_every=20,
                         restore_best=False, progress=False)
    history = tinylm.train(model, CausalLM(noise, valid, eval_tokens=None), config)
    assert history.valid["bpc"][-1] > history.best_valid
    assert metrics.bits_per_char(tinylm.score(model, valid, context=20)) == pytest.approx(history.valid["bpc"][-1])


def test_snapshots_keep_the_weights_of_the_steps_asked_for():
    seed_everything(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=3, d_embed=8, d_hidden=32))
    config = TrainConfig(steps=30, batch_size=8, context=20, lr=1e-2, warmup=5, eval_every=30, progress=False)
    history = tinylm.train(model, CausalLM(TEXT, TEXT, eval_tokens=200), config, snapshots=(10, 30))
    assert sorted(history.snapshots) == [10, 30]
    final = model.state_dict()
    assert all(torch.equal(history.snapshots[30][k], final[k]) for k in final)
    assert not all(torch.equal(history.snapshots[10][k], final[k]) for k in final)
    assert "snapshots" not in history.to_dict()


def test_subword_losses_are_per_character():
    objective = CausalLM(TEXT, TEXT[:100], eval_tokens=None, train_chars=2 * len(TEXT), valid_chars=300)
    assert objective.train_scale == pytest.approx(0.5)
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPConfig(vocab_size=10, context=2, d_embed=4, d_hidden=8))
    objective.start(model, TrainConfig(context=20))
    assert objective.evaluate(model)["bpc"] == pytest.approx(-tinylm.score(model, TEXT[:100]).sum() / 300)
    with pytest.raises(ValueError, match="valid_chars"):
        CausalLM(TEXT, TEXT, eval_tokens=100, valid_chars=300)


def test_sampling_is_seeded_and_restores_the_training_mode():
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell="gru", d_embed=4, d_state=8, dropout=0.5))
    model.train()
    a = tinylm.generate(model, [1, 2], 20, tinylm.Sampler(seed=3))
    assert model.training, "generate puts the model back in the mode it found it"
    b = tinylm.generate(model, [1, 2], 20, tinylm.Sampler(seed=3))
    assert a == b and len(a) == 20 and all(0 <= t < 10 for t in a)
    assert a == tinylm.generate(model, [1, 2], 20, tinylm.Sampler(seed=3), use_cache=False)
    model.eval()
    assert a == tinylm.generate(model, [1, 2], 20, tinylm.Sampler(seed=3)), "no dropout while generating"
    assert not model.training
    with pytest.raises(ValueError):
        tinylm.generate(model, [], 5)
    mlp = MLPLanguageModel(MLPConfig(vocab_size=10, context=2))
    assert len(tinylm.generate(mlp, [3], 7)) == 7


def test_history_and_parameter_count():
    model = RecurrentLM(RecurrentConfig(vocab_size=10, cell="rnn", d_embed=4, d_state=8))
    assert model.num_parameters() == 10 * 4 + (4 * 8 + 8 * 8 + 2 * 8) + (8 * 10 + 10)
    history = History(step=[1, 2], cpu_seconds=[0.1, 0.2], train_loss=[3.0, 2.0], valid={"bpc": [3.1, 2.5]},
                      best_valid=2.5000001234, best_step=2)
    saved = history.to_dict()
    assert saved["best_valid"] == 2.5 and saved["valid"] == {"bpc": [3.1, 2.5]}
    assert History.from_dict(saved) == dataclasses.replace(history, best_valid=2.5)


class Spy:
    """An objective that records, at every step, the learning rate the optimizer is set to and
    the loss of the batch."""

    def __init__(self, inner):
        self.inner, self.lrs, self.losses = inner, [], []
        self.unit, self.monitor, self.higher_is_better = inner.unit, inner.monitor, inner.higher_is_better

    def start(self, model, config):
        self.inner.start(model, config)

    def loss(self, model):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        loss, value = self.inner.loss(model)
        self.losses.append(value)
        return loss, value

    def evaluate(self, model):
        return self.inner.evaluate(model)


def test_stop_after_runs_the_start_of_the_same_schedule(monkeypatch):
    config = TrainConfig(steps=90, batch_size=4, context=10, lr=1e-2, warmup=5, eval_every=30, progress=False)
    spies = []

    def run(config):
        spy = Spy(CausalLM(TEXT, TEXT, eval_tokens=100))
        make = loop.make_optimizer

        def recording(model, config):
            spy.optimizer = make(model, config)
            return spy.optimizer
        monkeypatch.setattr(loop, "make_optimizer", recording)
        seed_everything(0)
        spies.append(spy)
        return tinylm.train(MLPLanguageModel(MLPConfig(vocab_size=10, context=2)), spy, config)

    whole = run(config)
    start = run(dataclasses.replace(config, stop_after=45))
    full, short = spies
    assert whole.steps_done == 90 and len(full.lrs) == 90
    assert start.steps_done == 45 and start.step == [30, 45] and len(short.lrs) == 45
    assert short.lrs == full.lrs[:45] == [config.lr_at(s) for s in range(45)]
    assert short.lrs[-1] > 2 * full.lrs[-1], "the schedule is not squeezed into the shorter run"
    assert short.losses == full.losses[:45]
    assert start.valid["bpc"][0] == whole.valid["bpc"][0]
    assert start.train_loss[0] == whole.train_loss[0]
