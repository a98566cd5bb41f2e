"""Masked-language-model pre-training (tinylm.training.masked_lm), fine-tuning a classifier
(tinylm.models.classifier, the Classification objective), and the mlm-zh recipe and checkpoint."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tinylm
from tinylm import data
from tinylm.checkpoint import FILES
from tinylm.models import build
from tinylm.models.classifier import SequenceClassifier, accuracy, mean_pool, predict
from tinylm.models.transformer import Encoder, MaskedLM, TransformerConfig
from tinylm.paths import course_root
from tinylm.tokenizers import BERT_SPECIALS, CharTokenizer
from tinylm.training import Classification, TrainConfig, masked_lm, seed_everything
from tinylm.training.batches import pad
from tinylm.training.masked_lm import IGNORE, N_SPECIAL, bert_inputs, frame
from tinylm.training.recipes import RECIPES, MaskedLMRecipe

ROOT = course_root(Path(__file__).parent)
MAX_MB = 10
MAX_CPU_SECONDS = 12 * 60

TOK = CharTokenizer("abc", specials=BERT_SPECIALS)
PAD, UNK, CLS, SEP, MASK = TOK.pad_id, TOK.unk_id, TOK.cls_id, TOK.sep_id, TOK.mask_id


def tiny_config(vocab_size, **kw):
    return TransformerConfig(vocab_size=vocab_size, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=32,
                             pad_id=PAD, **kw)


# tokens --------------------------------------------------------------------------------------

def test_berts_special_tokens_are_the_first_five_ids():
    assert (PAD, UNK, CLS, SEP, MASK) == (0, 1, 2, 3, 4) and N_SPECIAL == len(BERT_SPECIALS) == 5
    assert masked_lm.BERT_IDS == {name: i for i, name in enumerate(BERT_SPECIALS)}
    assert len(TOK.special_tokens) == 5 and TOK.bos_id is None and TOK.eos_id is None


def test_tokenizer_specials_come_first_and_texts_are_framed():
    tok = CharTokenizer("你好世界", specials=BERT_SPECIALS)
    assert tok.symbols[:5] == list(BERT_SPECIALS) and len(tok) == 9
    assert tok.encode("你好吗") == [5, 6, UNK], "the text's ids only; an unknown character is [UNK]"
    assert frame(tok.encode("你好吗")) == [CLS, 5, 6, UNK, SEP]
    assert frame(tok.encode("你好世界"), max_len=4) == [CLS, 5, 6, SEP]
    assert tok.decode(frame(tok.encode("世界"))) == "[CLS]世界[SEP]"
    assert repr(tok) == "CharTokenizer(9 symbols: 5 special, 4 characters)"
    with pytest.raises(ValueError, match="max_len"):
        frame(tok.encode("你"), max_len=2)
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["你好"], specials=BERT_SPECIALS)


def test_vocabulary_from_texts_is_by_count_then_code_point_and_drops_rare():
    tok = CharTokenizer.from_texts(["babc", "cb"], min_count=2, specials=BERT_SPECIALS)
    assert tok.ordinary == ["b", "c"]          # b x3, c x2; a once is dropped
    assert tok.encode("abc") == [UNK, 5, 6]
    assert CharTokenizer.from_texts(["cab"]).symbols == ["a", "b", "c"], "ties in code-point order, no specials"


def test_batch_pads_to_the_longest_and_marks_real_tokens():
    ids, mask = bert_inputs(TOK, ["abc", "a"], max_len=10)
    assert ids.shape == mask.shape == (2, 5)
    assert ids[1].tolist() == [CLS, 5, SEP, PAD, PAD]
    assert mask[1].tolist() == [True, True, True, False, False] and bool(mask[0].all())
    assert bert_inputs(TOK, ["abcabc"], max_len=4)[0].tolist() == [[CLS, 5, 6, SEP]]
    with pytest.raises(TypeError, match="list of texts"):
        bert_inputs(TOK, "abc", max_len=10)


# masking -------------------------------------------------------------------------------------

def masked_batch(seed=0):
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(N_SPECIAL, 60, (400, 250), generator=g)
    ids[:, 0], ids[:, 200] = CLS, SEP
    ids[:, 201:] = PAD                   # a fifth of every row is padding
    ids[::7, 100] = MASK                 # and a few literal specials in the text
    inputs, targets = masked_lm.mask_tokens(ids, 60, torch.Generator().manual_seed(seed))
    return ids, inputs, targets


def test_masking_follows_berts_proportions():
    ids, inputs, targets = masked_batch()
    ordinary = ids >= N_SPECIAL
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
    special = ids < N_SPECIAL
    assert bool((targets[special] == IGNORE).all()), "a special token or padding was chosen"
    assert bool((inputs[special] == ids[special]).all()), "a special token or padding was changed"
    changed = (inputs != ids) & (inputs != MASK)
    assert bool((inputs[changed] >= N_SPECIAL).all()), "a random replacement drew a special token"
    assert bool((inputs[targets == IGNORE] == ids[targets == IGNORE]).all()), "an unchosen token changed"


def test_masking_repeats_with_the_same_generator_seed():
    _, a, ta = masked_batch(seed=3)
    _, b, tb = masked_batch(seed=3)
    _, c, _ = masked_batch(seed=4)
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)


def test_masking_rejects_bad_shares():
    with pytest.raises(ValueError, match="shares"):
        masked_lm.mask_tokens(torch.zeros(2, 2, dtype=torch.long), 10, torch.Generator(), mask_share=0.95,
                              random_share=0.1)


def test_the_head_at_the_chosen_positions_equals_the_full_logits():
    torch.manual_seed(0)
    model = MaskedLM(tiny_config(20)).eval()
    ids = torch.randint(5, 20, (3, 9))
    positions = torch.rand(3, 9) < 0.3
    positions[0, 0] = True
    with torch.no_grad():
        full, state = model(ids)
        assert state is None
        assert torch.allclose(model.head(model.encoder(ids)[positions]), full[positions], atol=1e-5)
        targets = torch.where(positions, ids, torch.full_like(ids, IGNORE))
        loss, right, n = masked_lm.mlm_loss(model, ids, targets)
    assert n == int(positions.sum())
    assert float(loss) == pytest.approx(float(F.cross_entropy(full[positions], ids[positions])), abs=1e-5)
    assert right == int((full[positions].argmax(-1) == ids[positions]).sum())
    with pytest.raises(ValueError, match="no position was chosen"):
        masked_lm.mlm_loss(model, ids, torch.full_like(ids, IGNORE))


def test_padding_mask_is_passed_by_name():
    torch.manual_seed(0)
    model = MaskedLM(tiny_config(20)).eval()
    ids, mask = bert_inputs(CharTokenizer("abcdefghijklmno", specials=BERT_SPECIALS), ["abc", "abcdefg"], 16)
    alone, _ = model(ids[:1, :5])
    padded, _ = model(ids, padding_mask=mask)
    assert torch.allclose(padded[0, :5], alone[0], atol=1e-5)
    assert not torch.allclose(model(ids)[0][0, :5], alone[0], atol=1e-3), "without the mask padding is read"


def test_fill_masks_returns_ordinary_characters_in_order_of_probability():
    tok = CharTokenizer("abcdef", specials=BERT_SPECIALS)
    torch.manual_seed(0)
    model = MaskedLM(tiny_config(len(tok)))
    out = masked_lm.fill_masks(model, tok, "ab[MASK]d[MASK]", k=3)
    assert len(out) == 2 and all(len(top) == 3 for top in out)
    for top in out:
        assert all(ch in "abcdef" for ch, _ in top)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        masked_lm.fill_masks(model, tok, "abc")


# pre-training --------------------------------------------------------------------------------

def test_random_windows_start_with_cls_and_have_no_padding():
    stream = torch.arange(5, 105)
    w = masked_lm.bert_windows(stream, 6, 10, torch.Generator().manual_seed(0))
    assert w.shape == (6, 10) and bool((w[:, 0] == CLS).all()) and not bool((w == PAD).any())
    assert bool((w[:, 2:] - w[:, 1:-1] == 1).all()), "a window is a contiguous piece of the stream"
    with pytest.raises(ValueError, match="shorter"):
        masked_lm.bert_windows(stream[:5], 1, 10, torch.Generator())


def test_text_stream_separates_documents():
    stream = masked_lm.text_stream(TOK, ["ab", "c", "zz"])
    assert stream.tolist() == [5, 6, SEP, 7, SEP, UNK, UNK, SEP]


def test_pretraining_lowers_the_mlm_loss():
    tok = CharTokenizer("abcdefghij", specials=BERT_SPECIALS)
    stream = masked_lm.text_stream(tok, ["abcdefghij" * 20] * 5)
    valid = masked_lm.fixed_masked_batches(stream, len(tok), 8, 16, 16)
    seed_everything(0)
    model = MaskedLM(tiny_config(len(tok)))
    before, chance = masked_lm.evaluate_mlm(model, valid)
    config = TrainConfig(steps=300, batch_size=16, context=16, lr=3e-3, warmup=10, eval_every=150, progress=False)
    history = tinylm.train(model, masked_lm.MaskedLM(stream, valid), config)
    assert (history.unit, history.monitor) == ("nats", "loss")
    assert history.steps_done == 300 and history.step == [150, 300]
    assert history.valid["loss"][-1] < 0.6 * before, (before, history.valid)
    # each character follows from its neighbours; guessing is right one time in ten
    assert chance < 0.2 and history.valid["accuracy"][-1] > 0.4, history.valid
    assert masked_lm.evaluate_mlm(model, valid) == pytest.approx((history.best_valid, history.valid["accuracy"][
        history.step.index(history.best_step)]))


def test_fixed_validation_batches_are_the_same_every_time():
    stream = masked_lm.text_stream(TOK, ["abcabcab" * 10])
    a = masked_lm.fixed_masked_batches(stream, len(TOK), 2, 4, 8)
    b = masked_lm.fixed_masked_batches(stream, len(TOK), 2, 4, 8)
    assert all(torch.equal(x, y) and torch.equal(s, t) for (x, s), (y, t) in zip(a, b))


def test_pretraining_text_never_includes_test_reviews():
    recipe = RECIPES["mlm-zh"]
    with pytest.raises(ValueError, match="never"):
        recipe.documents("test")
    documents = set(recipe.documents("train"))
    assert not documents & set(data.sentiment().texts("test"))
    assert set(data.sentiment().texts("train")) <= documents


# fine-tuning ---------------------------------------------------------------------------------

def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_shapes_and_padding_does_not_change_the_answer(pooling):
    torch.manual_seed(0)
    model = SequenceClassifier(Encoder(tiny_config(30)), n_classes=3, pooling=pooling).eval()
    ids, mask = pad([[CLS, 7, 8, 9, SEP], [CLS, 7, SEP]], PAD)
    logits, state = model(ids, padding_mask=mask)
    assert logits.shape == (2, 3) and state is None
    alone, _ = model(torch.tensor([[CLS, 7, SEP]]))
    assert torch.allclose(logits[1], alone[0], atol=1e-5), "padding changed a shorter sequence's logits"
    assert torch.allclose(model(ids)[0], logits), "without a mask, the pad_id marks the padding"
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(Encoder(tiny_config(30)), 2, pooling="max")


def test_fine_tuning_learns_a_trivially_separable_task():
    tok = CharTokenizer("ab", specials=BERT_SPECIALS)
    texts = ["a" * n for n in range(2, 12)] + ["b" * n for n in range(2, 12)]
    labels = [0] * 10 + [1] * 10
    ids, _ = bert_inputs(tok, texts, max_len=16)
    seed_everything(0)
    model = SequenceClassifier(Encoder(tiny_config(len(tok))), 2)
    config = TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, eval_every=10, progress=False)
    history = tinylm.train(model, Classification(ids, labels, tok.pad_id, valid=(ids, labels)), config)
    assert (history.unit, history.monitor) == ("nats", "accuracy") and history.step == [10, 20, 30, 40]
    assert history.train_loss[-1] < 0.2 * history.train_loss[0], history.train_loss
    assert history.valid["accuracy"][-1] == history.best_valid == 1.0
    assert accuracy(model, ids, labels) == 1.0
    assert predict(model, ids).tolist() == labels
    with pytest.raises(ValueError, match="20 sequences and 19 labels"):
        Classification(ids, labels[:-1], tok.pad_id)


def test_predict_returns_rows_in_their_original_order():
    class Length(torch.nn.Module):        # "predicts" each row's number of real tokens
        pad_id = PAD

        def forward(self, ids, state=None, padding_mask=None):
            return F.one_hot(padding_mask.sum(1), 20).float(), None

    ids, _ = pad([[CLS, 5, 5, 5, SEP], [CLS, SEP], [CLS, 5, SEP], [CLS, 5, 5, 5, 5, 5, SEP]], PAD)
    model = Length().train()
    assert predict(model, ids, batch_size=2).tolist() == [5, 2, 3, 7]
    assert model.training, "predict puts the model's mode back"


# the recipe and the committed checkpoint -------------------------------------------------------

def tiny_recipe():
    recipe = RECIPES["mlm-zh"]
    return replace(recipe, name="mlm-tiny", model={**recipe.model, "d_model": 16, "n_heads": 2, "n_layers": 1,
                                                   "d_ff": 32, "max_len": 16},
                   train=replace(recipe.train, steps=3, batch_size=2, context=16, eval_every=2, progress=False),
                   min_count=50, valid_batches=1)


def test_a_trial_run_writes_a_checkpoint_that_loads_and_repeats(tmp_path):
    recipe = tiny_recipe()
    assert isinstance(recipe, MaskedLMRecipe)
    log = recipe.run(tmp_path)
    again = recipe.run(tmp_path / "again")
    assert log["history"]["valid"] == again["history"]["valid"], "a pre-training run must be deterministic"
    model, tok, on_disk = tinylm.load(tmp_path / "mlm-tiny")
    assert isinstance(model, MaskedLM) and not model.training
    assert on_disk["parameters"] == model.num_parameters() == log["parameters"]
    assert len(tok) == model.config.vocab_size and tok.pad_id == model.config.pad_id == 0
    assert tok.special_tokens == masked_lm.BERT_IDS
    assert on_disk["history"]["steps_done"] == 3 and log["history"]["step"] == [2, 3]
    assert set(log["history"]["valid"]) == {"loss", "accuracy"}
    assert log["train_cpu_seconds"] >= 0 and log["peak_mb"] > 0
    assert log["text"]["documents"] == len(recipe.documents("train"))


def test_a_missing_checkpoint_says_how_to_make_it(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "tinylm").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m tinylm train mlm-zh"):
        tinylm.load("mlm-zh")


def test_committed_checkpoint_is_a_complete_small_run_of_its_recipe():
    folder = ROOT / "checkpoints" / "mlm-zh"
    weights = folder / FILES["weights"]
    assert weights.is_file(), f"{weights} is missing"
    assert weights.stat().st_size < MAX_MB * 2**20, f"{weights.name} is larger than {MAX_MB} MB"
    model, tok, log = tinylm.load("mlm-zh")
    assert log["stop_after"] is None, "a trial run (--stop-after); train the whole recipe"
    recipe = RECIPES["mlm-zh"]
    assert log["history"]["steps_done"] == recipe.train.steps
    expected = build("encoder", dict(recipe.model, vocab_size=len(tok), pad_id=tok.pad_id))
    assert model.config == expected.config, "the recipe changed since"
    # options added to TrainConfig since the run (accumulate) are read at their defaults, the values it had
    assert TrainConfig.from_dict(log["recipe"]["train"]) == recipe.train, "the training recipe changed since"
    assert log["train_cpu_seconds"] <= MAX_CPU_SECONDS, "a pre-training run has at most 12 minutes of one core"
    assert len(tok.ordinary) + len(BERT_SPECIALS) == len(tok) == model.config.vocab_size
    assert tok.special_tokens == masked_lm.BERT_IDS
    assert set(log["text"]) == {"documents", "tokens", "valid_tokens"}
    valid = log["history"]["valid"]
    assert valid["loss"][-1] < valid["loss"][0] and valid["accuracy"][-1] > valid["accuracy"][0]
    assert log["history"]["best_valid"] == pytest.approx(min(valid["loss"]))


@pytest.mark.parametrize("probe, best, probability", [("经济[MASK]展", "发", 0.70), ("质量很好，价格也便[MASK]。", "宜", 0.41)])
def test_committed_checkpoint_fills_in_a_blank_as_lab_12_shows(probe, best, probability):
    model, tok, _ = tinylm.load("mlm-zh")
    (top,) = masked_lm.fill_masks(model, tok, probe, k=5)
    assert top[0][0] == best and round(top[0][1], 2) == probability
