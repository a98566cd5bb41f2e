"""A text-to-text task with exact answers: Chinese numerals (二千零三十万零四百) and their digits.

Lab 13 trains an encoder-decoder on it: a number written in Chinese characters
(:func:`chinese_numeral`) in, its digits (20300400) out, and the reverse
(:func:`parse_chinese_numeral` reads a numeral back).  :func:`split_numbers` splits numbers
into training, validation and test sets that share no number, stratified by their number of
digits; :func:`numeral_example` writes one example in T5's form, after a task prefix.

Chinese numerals here follow the usual school rules: 二 (never 两), 十 for 10 to 19 at the
start of a number (十五, 十万) but 一十 inside one (一百一十), one 零 for a run of zeros inside
a four-digit section (一千零五), none at the end of a section (二千零三十万), and 零 before a
lower section that has no thousands (一万零三百, 一千万零一).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DIGITS = "零一二三四五六七八九"
"""The Chinese digits 0 to 9."""
UNITS = "十百千"
"""Tens, hundreds and thousands inside a four-digit section."""
WAN = "万"
"""Ten thousand: the unit between the two sections of a number below 10^8."""
NUMERAL_CHARS = DIGITS + UNITS + WAN
LIMIT = 10 ** 8
"""Numbers below this (up to 九千九百九十九万九千九百九十九) are handled; 亿 is not."""


def _section(n: int) -> str:
    """1 <= n <= 9999 in characters, with one 零 for each run of inner zeros and none at the end."""
    out, zero_pending, started = [], False, False
    for power in (3, 2, 1, 0):
        digit = n // 10 ** power % 10
        if digit == 0:
            zero_pending = zero_pending or started
            continue
        if zero_pending:
            out.append(DIGITS[0])
            zero_pending = False
        out.append(DIGITS[digit] + (UNITS[power - 1] if power else ""))
        started = True
    return "".join(out)


def chinese_numeral(n: int) -> str:
    """The integer ``0 <= n < 10**8`` in Chinese characters, written the standard way.

    >>> [chinese_numeral(n) for n in (0, 10, 110, 1005, 10010, 20300400)]
    ['零', '十', '一百一十', '一千零五', '一万零一十', '二千零三十万零四百']
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"chinese_numeral takes an int, not {type(n).__name__}")
    n = int(n)
    if not 0 <= n < LIMIT:
        raise ValueError(f"chinese_numeral handles 0 <= n < 10**8, got {n}")
    if n == 0:
        return DIGITS[0]
    high, low = divmod(n, 10_000)
    text = _section(high) + WAN if high else ""
    if low:
        if high and low < 1000:          # the lower section starts with zeros: 一万零三百
            text += DIGITS[0]
        text += _section(low)
    if text.startswith("一十"):          # 10-19 at the start of a number: 十五, 十万
        text = text[1:]
    return text


def parse_chinese_numeral(text: str) -> int:
    """The integer a Chinese numeral stands for: the inverse of :func:`chinese_numeral`.

    The numeral is read section by section (before and after 万), each section as digit-unit
    pairs in decreasing order with 零 between them.  Only the standard form is accepted, so
    ``chinese_numeral(parse_chinese_numeral(s)) == s``; anything else (两, 一十五, 一百三)
    raises a ``ValueError`` that shows the standard form.

    >>> parse_chinese_numeral("二千零三十万零四百")
    20300400
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a non-empty string of Chinese numerals, got {text!r}")
    bad = sorted(set(text) - set(NUMERAL_CHARS))
    if bad:
        raise ValueError(f"{text!r}: {''.join(bad)!r} is not a numeral character (allowed: {NUMERAL_CHARS})")
    if text.count(WAN) > 1:
        raise ValueError(f"{text!r}: 万 appears more than once")
    high_text, _, low_text = text.rpartition(WAN)
    if WAN in text and not high_text:
        raise ValueError(f"{text!r}: 万 needs a number before it")
    value = _parse_section(high_text, text) * 10_000 + _parse_section(low_text, text)
    if chinese_numeral(value) != text:
        raise ValueError(f"{text!r} is not the standard way to write {value}: that is {chinese_numeral(value)!r}")
    return value


def _parse_section(text: str, whole: str) -> int:
    """A section of up to four digits ("" is 0): digit-unit pairs, largest unit first."""
    value, digit, last_power = 0, None, 4
    for ch in text:
        if ch in DIGITS:
            if digit is not None:
                raise ValueError(f"{whole!r}: {DIGITS[digit]}{ch}, two digits without a unit between them")
            digit = DIGITS.index(ch) or None          # 零 only marks skipped places
            continue
        power = UNITS.index(ch) + 1
        if power >= last_power:
            raise ValueError(f"{whole!r}: the unit {ch} comes after a unit as large or larger")
        if digit is None:
            if ch != UNITS[0]:
                raise ValueError(f"{whole!r}: the unit {ch} needs a digit before it")
            digit = 1                                 # 十 alone means 一十
        value += digit * 10 ** power
        digit, last_power = None, power
    return value + (digit or 0)


# ----------------------------------------------------------------------------- the task

def numeral_tokenizer(prefix: str = ""):
    """The task's character tokenizer: the encoder-decoder's special tokens ``[PAD] [BOS] [EOS]``
    (ids 0, 1, 2), then the digits 0-9, the numeral characters and the characters of the task
    ``prefix``, in that order.  One tokenizer serves the encoder and the decoder, which share
    their token embeddings (as T5's do)."""
    from ..tokenizers import SEQ2SEQ_SPECIALS, CharTokenizer

    return CharTokenizer("0123456789" + NUMERAL_CHARS + prefix, specials=SEQ2SEQ_SPECIALS)


@dataclass(frozen=True)
class Example:
    """One example of a text-to-text task: the encoder's input and the answer, as text."""

    source: str
    target: str
    n: int | None = None       # the number behind it, for the numeral task

    def encode(self, tokenizer) -> tuple[list[int], list[int]]:
        """(source ids, target ids) under ``tokenizer``."""
        return tokenizer.encode(self.source), tokenizer.encode(self.target)


def numeral_example(n: int, prefix: str = "", reverse: bool = False) -> Example:
    """The numeral task in T5's text-to-text form: after the task ``prefix``, the Chinese numeral
    in and its digits out (一百零五 -> 105); with ``reverse``, digits in and numeral out."""
    numeral, digits = chinese_numeral(n), str(int(n))
    return Example(prefix + digits, numeral, n) if reverse else Example(prefix + numeral, digits, n)


def digit_count(n: int) -> int:
    """How many digits ``n`` has (0 has one)."""
    return len(str(int(n)))


def repeat_rare(numbers: Sequence[int], min_per_length: int) -> list[int]:
    """Repeat the numbers of each digit count that has fewer than ``min_per_length`` of them
    (there are only ten one-digit numbers) until it has that many, so that training batches
    show every length often enough.  Nothing new is added: the numbers are only repeated."""
    by_length: dict[int, list[int]] = {}
    for n in numbers:
        by_length.setdefault(digit_count(n), []).append(int(n))
    out = []
    for _, group in sorted(by_length.items()):
        out += (group * math.ceil(min_per_length / len(group)))[:min_per_length] if len(group) < min_per_length else group
    return out


def random_number(digits: int, rng: np.random.Generator, zero_rate: float = 0.1) -> int:
    """A random number of ``digits`` digits: the first digit uniform over 1-9 (0-9 for one
    digit), each later one 0 with probability ``zero_rate`` and otherwise uniform over 1-9.
    ``zero_rate=0.1`` draws uniformly; more makes the runs of zeros, which the 零 rules are
    about, more common."""
    if digits == 1:
        return int(rng.integers(0, 10))
    rest = np.where(rng.random(digits - 1) < zero_rate, 0, rng.integers(1, 10, size=digits - 1))
    return int("".join(map(str, [int(rng.integers(1, 10)), *rest.tolist()])))


def split_numbers(train_per_length: int, test_per_length: int, valid_per_length: int = 0,
                  max_digits: int = 8, seed: int = 0, zero_rate: float | Sequence[float] = 0.1,
                  max_test_fraction: float = 0.2):
    """Numbers with 1 .. ``max_digits`` digits, stratified by their number of digits, split into
    (train, valid, test) lists that share no number.

    For each number of digits, distinct numbers are drawn with :func:`random_number` (or, when
    more than a tenth of all numbers of that length are wanted, uniformly without replacement);
    a sequence of ``zero_rate`` values makes a mixture: each number is drawn with one of them,
    chosen at random;
    the test and validation sets take ``test_per_length`` and ``valid_per_length`` of them, but
    at most ``max_test_fraction`` of the numbers of that length each (there are only ten with
    one digit); training takes up to ``train_per_length`` of the rest.
    """
    if not 1 <= max_digits <= 8:
        raise ValueError(f"max_digits must be 1 .. 8, got {max_digits}")
    rng = np.random.default_rng(seed)
    rates = [float(zero_rate)] if np.isscalar(zero_rate) else [float(r) for r in zero_rate]
    train, valid, test = [], [], []
    for d in range(1, max_digits + 1):
        available = 10 if d == 1 else 9 * 10 ** (d - 1)
        n_test = min(test_per_length, int(available * max_test_fraction))
        n_valid = min(valid_per_length, int(available * max_test_fraction))
        n_train = min(train_per_length, available - n_test - n_valid)
        wanted = n_test + n_valid + n_train
        if available <= 10 * wanted:        # few numbers: shuffle them all
            low = 0 if d == 1 else 10 ** (d - 1)
            drawn = [low + int(x) for x in rng.permutation(available)[:wanted]]
        else:
            chosen: dict[int, None] = {}
            while len(chosen) < wanted:
                chosen.setdefault(random_number(d, rng, rates[int(rng.integers(len(rates)))]))
            drawn = list(chosen)
        test += drawn[:n_test]
        valid += drawn[n_test:n_test + n_valid]
        train += drawn[n_test + n_valid:]
    return train, valid, test
