import itertools
import math

import pytest

from tinylm.tokenizers.segment import UnigramSegmenter, precision_recall_f1


def all_segmentations(s):
    for cuts in itertools.product([0, 1], repeat=len(s) - 1):
        words, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                words.append(s[start:i])
                start = i
        yield words + [s[start:]]


def test_dynamic_programming_finds_the_most_probable_path():
    train = [["你", "吃", "了", "吗"], ["吃", "了"], ["你", "吃饭", "了", "吗"], ["吃饭"], ["饭"]]
    seg = UnigramSegmenter(train)
    for sentence in ["你吃了吗", "吃饭了吗", "你吃饭了", "吃了饭吗"]:
        def score(words):
            logps = [seg.word_logp(w) for w in words]
            return -math.inf if None in logps else sum(logps)
        best = max(all_segmentations(sentence), key=score)
        assert seg.segment(sentence) == best


def test_unknown_characters_still_segment():
    seg = UnigramSegmenter([["你好"]])
    assert seg.segment("你好吗") == ["你好", "吗"]


def test_longest_word_bounds_the_search():
    seg = UnigramSegmenter([["你", "吃饭了"], ["吃饭"]])
    assert seg.longest_word == 3
    assert seg.segment("你吃饭了") == ["你", "吃饭了"]


def test_precision_recall_f1_on_spans():
    gold = [["你", "吃", "了", "吗"]]
    pred = [["你", "吃了", "吗"]]
    p, r, f = precision_recall_f1(gold, pred)
    assert (p, r) == (2 / 3, 2 / 4)
    assert f == pytest.approx(2 * p * r / (p + r))
    with pytest.raises(ValueError, match="different text"):
        precision_recall_f1(gold, [["你", "好"]])
