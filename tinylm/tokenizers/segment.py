"""Chinese word segmentation (分词) with a unigram language model.

Chinese is written without spaces between words.  A unigram language model gives every word
w a probability P(w); a segmentation s = w1 w2 ... wm of a sentence then has probability
P(w1) P(w2) ... P(wm), and the best segmentation is the most probable one.  Dynamic
programming finds it in time proportional to (sentence length) x (longest word):

    best[i] = max over j < i of  best[j] + log P(sentence[j:i]),   best[0] = 0,

and following the argmax pointers back from best[n] gives the words.  A character that
never occurred as a word gets a small probability, so every sentence has a segmentation.

Segmentations are scored by precision, recall and F1 over words identified by their
character spans (start, end), the standard measure of the SIGHAN bakeoffs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable


class UnigramSegmenter:
    """Most-probable-path segmentation under a unigram word model learnt from segmented text."""

    def __init__(self, sentences: Iterable[list[str]], unknown_char_count: float = 0.5):
        self.counts = Counter(w for words in sentences for w in words)
        if not self.counts:
            raise ValueError("no words to learn from")
        self.total = sum(self.counts.values())
        self.longest_word = max(len(w) for w in self.counts)
        self.unknown_logp = math.log(unknown_char_count / self.total)
        self.logp = {w: math.log(c / self.total) for w, c in self.counts.items()}

    def word_logp(self, word: str) -> float | None:
        """log P(word); a single unknown character gets a small floor, longer unknowns None."""
        logp = self.logp.get(word)
        if logp is None and len(word) == 1:
            return self.unknown_logp
        return logp

    def segment(self, sentence: str) -> list[str]:
        n = len(sentence)
        best = [0.0] + [-math.inf] * n
        back = [0] * (n + 1)
        for i in range(1, n + 1):
            for j in range(max(0, i - self.longest_word), i):
                logp = self.word_logp(sentence[j:i])
                if logp is not None and best[j] + logp > best[i]:
                    best[i], back[i] = best[j] + logp, j
        words, i = [], n
        while i > 0:
            words.append(sentence[back[i]:i])
            i = back[i]
        return words[::-1]


def spans(words: list[str]) -> set[tuple[int, int]]:
    """Each word as its (start, end) character positions in the joined sentence."""
    out, start = set(), 0
    for w in words:
        out.add((start, start + len(w)))
        start += len(w)
    return out


def precision_recall_f1(gold: Iterable[list[str]], predicted: Iterable[list[str]]) -> tuple[float, float, float]:
    """Word-level precision, recall and F1 of predicted segmentations against gold ones."""
    correct = n_gold = n_pred = 0
    for g, p in zip(gold, predicted, strict=True):
        if "".join(g) != "".join(p):
            raise ValueError(f"gold and predicted segment different text: {''.join(g)[:20]!r}")
        gs, ps = spans(g), spans(p)
        correct += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
