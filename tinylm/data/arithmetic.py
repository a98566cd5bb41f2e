"""A task with exact answers that a small model learns from scratch: adding two numbers.

Lab 17 trains decoder-only Transformers of several sizes on it, to watch an ability "emerge".
A problem is one line of text, a prompt and its answer::

    03512+48790=   ->   052302        (written most significant digit first)
    21530+09784=   ->   203250        (the same problem written backwards, the default)

Every number has a fixed width (operands ``digits`` wide, the answer ``digits + 1`` wide), padded
with zeros, so that every problem has the same shape and the answer always has the same number
of tokens.  By default (``reverse=True``) every number is written **least significant digit
first**, the order in which we add by hand: the answer's k-th digit is then the sum of the two
operands' k-th digits and the carry from the digit just written, all a fixed distance back.
Written the usual way, the first answer digit already depends on every carry below it, which a
small model learns far more slowly (Lee et al., 2024, *Teaching arithmetic to small
Transformers*, found reversed answers learnt from far fewer examples).

:func:`split_problems` draws training, validation and test problems that share no problem;
``a+b`` and ``b+a`` count as the same problem, so a test problem is new to the model in either
order.  :func:`carries` counts the carries of a sum (the columns that overflow), which is what
makes a problem hard.

>>> task = Addition(digits=3)
>>> task.prompt(12, 345), task.answer(12, 345)
('210+543=', '7530')
>>> task.read(task.answer(12, 345))
357
>>> Addition(digits=3, reverse=False).text(12, 345)
'012+345=0357'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SYMBOLS = "0123456789+="
"""The task's whole vocabulary: ten digits, the plus sign and the equals sign (ids 0-11, so a
digit's id is its value)."""

Problem = tuple[int, int]
"""Two operands, ``(a, b)``; the answer is ``a + b``."""


@dataclass(frozen=True)
class Addition:
    """How addition problems of ``digits``-digit operands are written (see the module docstring)."""

    digits: int = 5
    reverse: bool = True     # every number least significant digit first

    def __post_init__(self):
        if isinstance(self.digits, bool) or not isinstance(self.digits, int) or not 1 <= self.digits <= 18:
            raise ValueError(f"digits must be an int from 1 to 18, got {self.digits!r}")

    @property
    def prompt_len(self) -> int:
        """Tokens in a prompt: two operands, ``+`` and ``=``."""
        return 2 * self.digits + 2

    @property
    def answer_len(self) -> int:
        """Tokens in an answer: one more digit than an operand (the last carry)."""
        return self.digits + 1

    def check(self, a: int, b: int) -> None:
        for n in (a, b):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < 10 ** self.digits:
                raise ValueError(f"operands are ints from 0 to {10 ** self.digits - 1}, got {n!r}")

    def number(self, n: int, width: int) -> str:
        """``n`` padded with zeros to ``width`` digits, backwards if ``reverse``."""
        text = str(int(n)).zfill(width)
        if len(text) > width:
            raise ValueError(f"{n} has more than {width} digits")
        return text[::-1] if self.reverse else text

    def prompt(self, a: int, b: int) -> str:
        self.check(a, b)
        return f"{self.number(a, self.digits)}+{self.number(b, self.digits)}="

    def answer(self, a: int, b: int) -> str:
        self.check(a, b)
        return self.number(a + b, self.answer_len)

    def text(self, a: int, b: int) -> str:
        """The whole problem, prompt then answer, as the model reads it in training."""
        return self.prompt(a, b) + self.answer(a, b)

    def read(self, answer: str) -> int:
        """The number an answer (or any string of digits in this task's order) stands for."""
        if not answer or not answer.isdigit():
            raise ValueError(f"an answer is a string of digits, got {answer!r}")
        return int(answer[::-1] if self.reverse else answer)

    def encode(self, problems: Iterable[Problem]) -> np.ndarray:
        """Token ids of whole problems, one row each: ``(n, prompt_len + answer_len)`` int64.
        The first ``prompt_len`` columns are the prompt, the rest the answer."""
        rows = [[SYMBOLS.index(c) for c in self.text(a, b)] for a, b in problems]
        if not rows:
            raise ValueError("no problems to encode")
        return np.asarray(rows, dtype=np.int64)


def tokenizer():
    """The task's tokenizer: one token per symbol of :data:`SYMBOLS`, no special tokens."""
    from ..tokenizers import CharTokenizer

    return CharTokenizer(SYMBOLS)


def carries(a: int, b: int, digits: int) -> int:
    """How many of the ``digits`` columns of ``a + b`` produce a carry (the column's digits plus
    the carry coming in reach 10).

    >>> carries(5, 5, 2), carries(99, 1, 2), carries(45, 54, 2)
    (1, 2, 0)
    """
    count, carry = 0, 0
    for k in range(digits):
        carry = int(a // 10 ** k % 10 + b // 10 ** k % 10 + carry >= 10)
        count += carry
    return count


@dataclass(frozen=True)
class Splits:
    """Training, validation and test problems, no problem (in either order) in two of them."""

    train: list[Problem]
    valid: list[Problem]
    test: list[Problem]

    def overlap(self) -> int:
        """How many problems two splits share, ``a+b`` and ``b+a`` counted as one (0 by construction)."""
        keys = [{(min(p), max(p)) for p in split} for split in (self.train, self.valid, self.test)]
        return len(keys[0] & keys[1]) + len(keys[0] & keys[2]) + len(keys[1] & keys[2])


def split_problems(train: int, valid: int, test: int, digits: int = 5, seed: int = 0,
                   mixed_lengths: bool = True) -> Splits:
    """Distinct problems; validation and test operands drawn uniformly from 0 .. 10**digits - 1
    (so most have all their digits).

    With ``mixed_lengths`` each *training* operand is first given a length k from 0 to ``digits``
    (uniformly), then drawn uniformly from 0 .. 10**k - 1 (length 0: the operand is 0).  Why: a
    digit of a sum, (a_k + b_k + carry) mod 10, is uncorrelated with either operand's digit alone
    when both are uniform, so at first nothing tells a model where to look; when b_k is 0 (a short
    b) the answer's digit is a_k, and that signal shows it which digits go together, as a
    curriculum would, without changing the problems the model is tested on.

    Test problems are drawn first, then validation, then training, each refusing any problem
    already drawn in either order, so the splits are disjoint and the test set does not depend on
    the size of the training set."""
    for name, n in (("train", train), ("valid", valid), ("test", test)):
        if n < 0:
            raise ValueError(f"{name} must be at least 0, got {n}")
    space = 10 ** digits
    if train + valid + test > space * (space + 1) // 4:      # at most half of the different problems
        raise ValueError(f"{train + valid + test:,} problems are too many for {digits}-digit operands")
    rng = np.random.default_rng(seed)
    seen: set[Problem] = set()
    out: dict[str, list[Problem]] = {}
    for name, n in (("test", test), ("valid", valid), ("train", train)):
        drawn: list[Problem] = []
        while len(drawn) < n:
            shape = (max(64, n - len(drawn)), 2)
            high = 10 ** rng.integers(0, digits + 1, size=shape) if name == "train" and mixed_lengths else space
            for a, b in rng.integers(0, high, size=shape).tolist():
                key = (min(a, b), max(a, b))
                if key not in seen and len(drawn) < n:
                    seen.add(key)
                    drawn.append((a, b))
        out[name] = drawn
    return Splits(out["train"], out["valid"], out["test"])


def answers_of(task: Addition, problems: Sequence[Problem]) -> list[str]:
    """The right answers, as the task writes them."""
    return [task.answer(a, b) for a, b in problems]
