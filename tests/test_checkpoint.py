"""One checkpoint format for every model (tinylm.checkpoint): save, load, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tinylm
from tinylm import checkpoint
from tinylm.models import (DecoderLM, EncoderDecoder, MaskedLM, MLPConfig, MLPLanguageModel, NGramModel,
                           RecurrentConfig, RecurrentLM, TransformerConfig)
from tinylm.tokenizers import BERT_SPECIALS, BPETokenizer, CharTokenizer, WordTokenizer, from_dict
from tinylm.training import TrainConfig
from tinylm.training.recipes import RECIPES

TEXT = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 4


def models():
    torch.manual_seed(0)
    chars = CharTokenizer(sorted(set(TEXT)))
    V = len(chars)
    gpt = TransformerConfig(V, d_model=16, n_heads=2, n_layers=2, max_len=32, norm="rms", positions="rotary",
                            mlp="swiglu", n_kv_heads=1)
    bert = CharTokenizer(sorted(set(TEXT)), specials=BERT_SPECIALS)
    return {
        "ngram": (NGramModel(3, V, "kneser-ney").fit(chars.encode(TEXT)), chars),
        "mlp": (MLPLanguageModel(MLPConfig(V, context=3, d_embed=4, d_hidden=8, direct=True)), chars),
        "recurrent": (RecurrentLM(RecurrentConfig(V, "lstm", d_embed=4, d_state=8, n_layers=2)), chars),
        "decoder": (DecoderLM(gpt), BPETokenizer.train(TEXT, 20, special_tokens=["<|end|>"])),
        "encoder": (MaskedLM(TransformerConfig(len(bert), d_model=16, n_heads=2, n_layers=1, max_len=32,
                                               pad_id=bert.pad_id)), bert),
        "encoder-decoder": (EncoderDecoder(TransformerConfig(V + 3, d_model=16, n_heads=2, n_layers=1, max_len=32,
                                                             pad_id=0, bos_id=1, eos_id=2)),
                            WordTokenizer.most_frequent(TEXT.split(), 10)),
    }


@pytest.mark.parametrize("family", sorted(models()))
def test_a_checkpoint_holds_the_model_its_tokenizer_and_its_log(family, tmp_path):
    model, tokenizer = models()[family]
    folder = tinylm.save(tmp_path / family, model, tokenizer, {"name": family, "note": "测试"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "log.json", "model.safetensors",
                                                        "tokenizer.json"]
    back, tok, log = tinylm.load(folder)
    assert type(back) is type(model) and back.config == model.config
    assert tok.to_dict() == tokenizer.to_dict() and tok.encode(TEXT[:30]) == tokenizer.encode(TEXT[:30])
    assert log["name"] == family and log["note"] == "测试" and "commit" in log["code"]
    ours, theirs = model.state_dict(), back.state_dict()
    assert set(ours) == set(theirs)
    for name in ours:
        assert np.array_equal(np.asarray(ours[name]), np.asarray(theirs[name])), name
    if family != "ngram":
        assert not back.training


def test_a_tied_output_layer_stays_tied(tmp_path):
    model, tokenizer = models()["decoder"]
    assert model.head.weight is model.embed.tokens.weight
    back, _, _ = checkpoint.load_folder(tinylm.save(tmp_path / "tied", model, tokenizer))
    assert back.head.weight is back.embed.tokens.weight


def test_the_committed_checkpoints_all_load():
    for name in ("mlp", "rnn", "lstm", "gpt", "gpt2style", "mlm-zh"):
        model, tokenizer, log = tinylm.load(name)
        assert log["name"] == name == log["recipe"]["name"] and log["parameters"] == model.num_parameters()
        assert log["code"]["commit"] and log["stop_after"] is None
        recipe = RECIPES[name]
        recorded = log["recipe"]
        if "train" in recorded:     # options added to TrainConfig since the run (accumulate) at their defaults
            recorded = {**recorded, "train": {**json.loads(json.dumps(TrainConfig().to_dict())), **recorded["train"]}}
        assert recorded == json.loads(json.dumps(recipe.to_dict())), f"{name}: the log and the recipe differ"


def test_a_name_that_is_not_there_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("")
    (tmp_path / "tinylm").mkdir()
    monkeypatch.setenv("TINYLM_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m tinylm train lstm"):
        tinylm.load("lstm")
    with pytest.raises(FileNotFoundError, match="not one of .*'all-minilm-l6-v2'.*'kn7'"):
        tinylm.load("no-such-model")


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    model, tokenizer = models()["mlp"]
    folder = tinylm.save(tmp_path / "m", model, tokenizer)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json missing"):
        tinylm.load(folder)
    folder = tinylm.save(tmp_path / "m2", model, tokenizer)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, version=99)))
    with pytest.raises(ValueError, match="version 1"):
        tinylm.load(folder)


def test_an_unknown_configuration_field_is_named():
    with pytest.raises(ValueError, match="'hidden'"):
        MLPConfig.from_dict({"vocab_size": 5, "hidden": 3})


def test_an_unknown_tokenizer_kind_is_named():
    with pytest.raises(ValueError, match="known kinds"):
        from_dict({"kind": "sentencepiece"})


def test_an_ngram_rung_is_counted_when_it_is_loaded():
    model, tokenizer, log = tinylm.load("kn7")
    assert isinstance(model, NGramModel) and model.order == 7 and log["counted_when_loaded"]
    assert log["parameters"] == model.num_parameters() == 2_149_322     # Lab 3's count of the 7-gram
