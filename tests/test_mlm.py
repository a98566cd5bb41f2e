"""Masked-language-model pre-training and fine-tuning (tinylm.mlm)."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tinylm import mlm, train
from tinylm.mlm import CLS, IGNORE, MASK, PAD, SEP, SPECIALS, CharTokenizer
from tinylm.paths import course_root
from tinylm.transformer import Encoder, MaskedLM, TransformerConfig

ROOT = course_root(Path(__file__).parent)
COMMITTED = sorted((ROOT / "checkpoints" / "pretrained").glob("*.json"))
MAX_MB = 10
MAX_CPU_SECONDS = 12 * 60


def tiny_config(vocab_size, **kw):
    return TransformerConfig(vocab_size=vocab_size, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=32,
                             pad_id=PAD, **kw)


# tokens --------------------------------------------------------------------------------------

def test_tokenizer_specials_come_first_and_texts_are_framed():
    tok = CharTokenizer("你好世界")
    assert tok.symbols[:5] == list(SPECIALS) and len(tok) == 9
    assert tok.encode("你好吗") == [CLS, 5, 6, 1, SEP]
    assert tok.encode("你好世界", max_len=4) == [CLS, 5, 6, SEP]
    assert tok.decode(tok.encode("世界")) == "[CLS]世界[SEP]"
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("你", max_len=2)
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["你好"])


def test_vocabulary_from_texts_is_by_count_then_code_point_and_drops_rare():
    tok = CharTokenizer.from_texts(["babc", "cb"], min_count=2)
    assert tok.characters == "bc"          # b x3, c x2; a once is dropped
    assert tok.ids("abc") == [1, 5, 6]


def test_batch_pads_to_the_longest_and_marks_real_tokens():
    tok = CharTokenizer("abc")
    ids, mask = tok.batch(["abc", "a"], max_len=10)
    assert ids.shape == mask.shape == (2, 5)
    assert ids[1].tolist() == [CLS, 5, SEP, PAD, PAD]
    assert mask[1].tolist() == [True, True, True, False, False] and bool(mask[0].all())


# masking -------------------------------------------------------------------------------------

def masked_batch(seed=0):
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(len(SPECIALS), 60, (400, 250), generator=g)
    ids[:, 0], ids[:, 200] = CLS, SEP
    ids[:, 201:] = PAD                   # a fifth of every row is padding
    ids[::7, 100] = MASK                 # and a few literal specials in the text
    inputs, targets = mlm.mask_tokens(ids, 60, torch.Generator().manual_seed(seed))
    return ids, inputs, targets


def test_masking_follows_berts_proportions():
    ids, inputs, targets = masked_batch()
    ordinary = ids >= len(SPECIALS)
    chosen = targets != IGNORE
    share = chosen.sum() / ordinary.sum()
    assert 0.145 < share < 0.155, share
    n = chosen.sum()
    masked = (inputs == MASK) & chosen
    unchanged = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~unchanged
    assert 0.79 < masked.sum() / n < 0.81
    # a random replacement may draw the original token (1 in 55): it then counts as unchanged
    assert 0.09 < replaced.sum() / n < 0.11
    assert 0.09 < unchanged.sum() / n < 0.11
    assert bool((targets[chosen] == ids[chosen]).all())


def test_specials_and_padding_are_never_masked_and_never_drawn():
    ids, inputs, targets = masked_batch()
    special = ids < len(SPECIALS)
    assert bool((targets[special] == IGNORE).all()), "a special token or padding was chosen"
    assert bool((inputs[special] == ids[special]).all()), "a special token or padding was changed"
    changed = (inputs != ids) & (inputs != MASK)
    assert bool((inputs[changed] >= len(SPECIALS)).all()), "a random replacement drew a special token"
    assert bool((inputs[targets == IGNORE] == ids[targets == IGNORE]).all()), "an unchosen token changed"


def test_masking_repeats_with_the_same_generator_seed():
    _, a, ta = masked_batch(seed=3)
    _, b, tb = masked_batch(seed=3)
    _, c, _ = masked_batch(seed=4)
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)


def test_masking_rejects_bad_shares():
    with pytest.raises(ValueError, match="shares"):
        mlm.mask_tokens(torch.zeros(2, 2, dtype=torch.long), 10, torch.Generator(), mask_share=0.95,
                        random_share=0.1)


def test_mlm_logits_at_positions_equal_the_full_head():
    torch.manual_seed(0)
    model = MaskedLM(tiny_config(20)).eval()
    ids = torch.randint(5, 20, (3, 9))
    positions = torch.rand(3, 9) < 0.3
    positions[0, 0] = True
    full = model(ids)[positions]
    assert torch.allclose(mlm.mlm_logits(model, ids, None, positions), full, atol=1e-5)


def test_fill_masks_returns_ordinary_characters_in_order_of_probability():
    tok = CharTokenizer("abcdef")
    torch.manual_seed(0)
    model = MaskedLM(tiny_config(len(tok)))
    out = mlm.fill_masks(model, tok, "ab[MASK]d[MASK]", k=3)
    assert len(out) == 2 and all(len(top) == 3 for top in out)
    for top in out:
        assert all(ch in "abcdef" for ch, _ in top)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        mlm.fill_masks(model, tok, "abc")


# pre-training --------------------------------------------------------------------------------

def test_random_windows_start_with_cls_and_have_no_padding():
    stream = torch.arange(5, 105)
    w = mlm.random_windows(stream, 6, 10, torch.Generator().manual_seed(0))
    assert w.shape == (6, 10) and bool((w[:, 0] == CLS).all()) and not bool((w == PAD).any())
    assert bool((w[:, 2:] - w[:, 1:-1] == 1).all()), "a window is a contiguous piece of the stream"
    with pytest.raises(ValueError, match="shorter"):
        mlm.random_windows(stream[:5], 1, 10, torch.Generator())


def test_pretraining_lowers_the_mlm_loss():
    tok = CharTokenizer("abcdefghij")
    stream = mlm.text_stream(tok, ["abcdefghij" * 20] * 5)
    valid = mlm.fixed_masked_batches(stream, len(tok), 8, 16, 16)
    train.seed_everything(0)
    model = MaskedLM(tiny_config(len(tok)))
    before, chance = mlm.evaluate_mlm(model, valid)
    config = train.TrainConfig(steps=300, batch_size=16, context=16, lr=3e-3, warmup=10, eval_every=150,
                               progress=False)
    history = mlm.pretrain(model, stream, valid, config)
    assert history.steps_done == 300 and history.step == [150, 300]
    assert history.valid_loss[-1] < 0.6 * before, (before, history.valid_loss)
    # each character follows from its neighbours; guessing is right one time in ten
    assert chance < 0.2 and history.valid_accuracy[-1] > 0.4, history.valid_accuracy


def test_pretraining_text_never_includes_test_reviews():
    recipe = mlm.RECIPES["mlm-zh"]
    with pytest.raises(ValueError, match="never"):
        mlm.pretraining_documents(recipe, "test")
    from tinylm import data
    documents = set(mlm.pretraining_documents(recipe, "train"))
    assert not documents & set(data.sentiment().texts("test"))
    assert set(data.sentiment().texts("train")) <= documents


# fine-tuning ---------------------------------------------------------------------------------

def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert mlm.mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_shapes_and_padding_does_not_change_the_answer(pooling):
    torch.manual_seed(0)
    model = mlm.SequenceClassifier(Encoder(tiny_config(30)), n_classes=3, pooling=pooling).eval()
    ids, mask = mlm.pad([[CLS, 7, 8, 9, SEP], [CLS, 7, SEP]])
    logits = model(ids, mask)
    assert logits.shape == (2, 3)
    alone = model(torch.tensor([[CLS, 7, SEP]]))
    assert torch.allclose(logits[1], alone[0], atol=1e-5), "padding changed a shorter sequence's logits"
    with pytest.raises(ValueError, match="pooling"):
        mlm.SequenceClassifier(Encoder(tiny_config(30)), 2, pooling="max")


def test_fine_tuning_learns_a_trivially_separable_task():
    tok = CharTokenizer("ab")
    texts = ["a" * n for n in range(2, 12)] + ["b" * n for n in range(2, 12)]
    labels = [0] * 10 + [1] * 10
    ids, _ = tok.batch(texts, max_len=16)
    train.seed_everything(0)
    model = mlm.SequenceClassifier(Encoder(tiny_config(len(tok))), 2)
    config = train.TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, progress=False)
    history = mlm.fine_tune(model, ids, labels, config)
    assert history.train_loss[-1] < 0.2 * history.train_loss[0], history.train_loss
    assert mlm.accuracy(model, ids, labels) == 1.0
    assert mlm.predict(model, ids).tolist() == labels


def test_predict_returns_rows_in_their_original_order():
    class Length(torch.nn.Module):        # "predicts" each row's number of real tokens
        def forward(self, ids, mask):
            return torch.nn.functional.one_hot(mask.sum(1), 20).float()

    ids, _ = mlm.pad([[CLS, 5, 5, 5, SEP], [CLS, SEP], [CLS, 5, SEP], [CLS, 5, 5, 5, 5, 5, SEP]])
    assert mlm.predict(Length(), ids, batch_size=2).tolist() == [5, 2, 3, 7]


# the command and the committed checkpoint -------------------------------------------------------

def tiny_recipe():
    recipe = mlm.RECIPES["mlm-zh"]
    return replace(recipe, name="mlm-tiny", model={**recipe.model, "d_model": 16, "n_heads": 2, "n_layers": 1,
                                                   "d_ff": 32, "max_len": 16},
                   train=replace(recipe.train, steps=3, batch_size=2, context=16, eval_every=2, progress=False),
                   min_count=50, valid_batches=1)


def test_a_trial_run_writes_a_checkpoint_that_loads_and_repeats(tmp_path):
    recipe = tiny_recipe()
    log = mlm.run(recipe, tmp_path)
    again = mlm.run(recipe, tmp_path / "again")
    assert log["history"]["valid_loss"] == again["history"]["valid_loss"], "a pre-training run must be deterministic"
    model, tok, on_disk = mlm.load("mlm-tiny", tmp_path)
    assert on_disk["parameters"] == train.count_parameters(model) == log["parameters"]
    assert len(tok) == log["model"]["vocab_size"] and on_disk["history"]["steps_done"] == 3
    assert log["history"]["step"] == [2, 3] and log["train_cpu_seconds"] >= 0 and log["peak_mb"] > 0


def test_the_command_line(capsys):
    parser = argparse.ArgumentParser()
    mlm.add_arguments(parser)
    args = parser.parse_args([])
    assert args.run(args) == 0 and "mlm-zh" in capsys.readouterr().out
    args = parser.parse_args(["nonsense"])
    assert args.run(args) == 2 and "choose one of" in capsys.readouterr().err


def test_a_missing_checkpoint_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m tinylm pretrain mlm-zh"):
        mlm.load("mlm-zh", tmp_path)


@pytest.mark.parametrize("log_path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_checkpoints_are_complete_small_runs_of_their_recipe(log_path):
    log = json.loads(log_path.read_text(encoding="utf-8"))
    weights = log_path.with_suffix(".safetensors")
    assert weights.is_file(), f"{weights.name} is missing"
    assert weights.stat().st_size < MAX_MB * 2**20, f"{weights.name} is larger than {MAX_MB} MB"
    assert not log["trial"], f"{log_path.name} is a trial run (--steps); train the whole recipe"
    recipe = mlm.RECIPES[log["name"]]
    assert log["history"]["steps_done"] == recipe.train.steps
    assert log["model"] == dict(recipe.model, vocab_size=log["model"]["vocab_size"], pad_id=PAD), \
        "the recipe changed since"
    assert log["train"] == json.loads(json.dumps(vars(recipe.train))), "the training recipe changed since"
    assert log["train_cpu_seconds"] <= MAX_CPU_SECONDS, "a pre-training run has at most 12 minutes of one core"
    assert len(log["characters"]) + len(SPECIALS) == log["model"]["vocab_size"]
    assert log["history"]["valid_loss"][-1] < log["history"]["valid_loss"][0]
