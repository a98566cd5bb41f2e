"""Sequence-to-sequence tasks, and training an encoder-decoder on them (T5's text-to-text).

T5 (Raffel et al., 2020) casts every task as *text in, text out*: the encoder reads the input
text, often with a task prefix ("translate English to German: ..."), and the decoder writes
the answer one token at a time.  This module holds what an encoder-decoder needs around
:class:`tinylm.transformer.EncoderDecoder`:

- a task whose answers can be checked exactly: a number written in Chinese characters
  (:func:`chinese_numeral`, 二千零三十万零四百) in, its digits (20300400) out; and its inverse
  :func:`parse_chinese_numeral`;
- the data: a character :class:`~tinylm.vocab.Vocabulary` with ``[PAD]``, ``[BOS]`` and
  ``[EOS]`` (ids 0, 1, 2), and a split of numbers into training, validation and test sets
  that share no number (:func:`split_numbers`);
- T5's pre-training objective, **span corruption** (:func:`span_corrupt`): hide random spans
  of a text behind sentinels ``<X0>``, ``<X1>`` ... and ask the decoder to write them out;
- the training loop (:func:`train_seq2seq`): padded batches, **teacher forcing**
  (:func:`teacher_forcing`: the decoder reads the answer shifted right by one, starting with
  ``[BOS]``, and predicts it), a loss that ignores the padding;
- scoring by **exact match** (:func:`exact_match`): greedy decoding of a whole batch, and a
  prediction counts only if every character is right.

Chinese numerals here follow the usual school rules: 二 (never 两), 十 for 10 to 19 at the
start of a number (十五, 十万) but 一十 inside one (一百一十), one 零 for a run of zeros inside
a four-digit section (一千零五), none at the end of a section (二千零三十万), and 零 before a
lower section that has no thousands (一万零三百, 一千万零一).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .train import TrainConfig
from .vocab import Vocabulary

# ----------------------------------------------------------------------------- Chinese numerals

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


# ----------------------------------------------------------------------------- the data

SPECIALS = ("[PAD]", "[BOS]", "[EOS]")
"""The special tokens every vocabulary here starts with."""
PAD, BOS, EOS = 0, 1, 2
"""Padding (ignored by attention and by the loss), the decoder's start token, end of answer."""


def make_vocabulary(*texts: str) -> Vocabulary:
    """A character vocabulary: the specials (ids 0, 1, 2), then every character of ``texts`` in
    order of first appearance.  One vocabulary serves the encoder and the decoder, which share
    their token embeddings (as T5's do)."""
    return Vocabulary(list(SPECIALS) + [ch for text in texts for ch in text])


def numeral_vocabulary(prefix: str = "") -> Vocabulary:
    """The vocabulary of the numeral task: specials, digits 0-9, the numeral characters, ``prefix``."""
    return make_vocabulary("0123456789", NUMERAL_CHARS, prefix)


@dataclass(frozen=True)
class Example:
    """One example of a text-to-text task: the encoder's input and the answer, as text."""

    source: str
    target: str
    n: int | None = None       # the number behind it, for the numeral task

    def encode(self, vocab: Vocabulary) -> tuple[list[int], list[int]]:
        return vocab.encode(self.source).tolist(), vocab.encode(self.target).tolist()


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


# ----------------------------------------------------------------------------- span corruption

def sentinel(i: int) -> str:
    """T5's i-th sentinel token, written <X0>, <X1>, ... (T5's own are <extra_id_0>, ...)."""
    return f"<X{i}>"


def _random_segmentation(n_items: int, n_segments: int, generator: torch.Generator) -> list[int]:
    """Split ``n_items`` into ``n_segments`` non-empty pieces at random; return their lengths."""
    cuts = torch.randperm(n_items - 1, generator=generator)[: n_segments - 1].sort().values + 1
    bounds = [0] + cuts.tolist() + [n_items]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def noise_mask(length: int, rate: float = 0.15, mean_span: float = 3.0,
               generator: torch.Generator | None = None, roll: bool = True) -> list[bool]:
    """Which of ``length`` tokens to hide, chosen as T5 does (``random_spans_noise_mask``).

    ``round(rate * length)`` tokens are hidden (at least 1, at most ``length - 1``), in
    ``round(noise / mean_span)`` spans (at least 1).  The hidden and the kept tokens are each cut
    into that many non-empty runs at random and interleaved, kept run first, so spans never
    touch.  That always ends the sequence with a hidden span; ``roll`` (T5's ``random_roll``)
    then rotates the mask by a random offset, so any position can be hidden.
    """
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0 < rate < 1 or mean_span < 1:
        raise ValueError(f"need 0 < rate < 1 and mean_span >= 1, got rate={rate}, mean_span={mean_span}")
    generator = generator or torch.Generator().manual_seed(0)
    n_noise = min(max(1, round(length * rate)), length - 1)
    n_spans = min(max(1, round(n_noise / mean_span)), length - n_noise)
    noise = _random_segmentation(n_noise, n_spans, generator)
    keep = _random_segmentation(length - n_noise, n_spans, generator)
    mask: list[bool] = []
    for k, m in zip(keep, noise):
        mask += [False] * k + [True] * m
    if roll:
        offset = int(torch.randint(length, (1,), generator=generator))
        mask = mask[offset:] + mask[:offset]
    return mask


def apply_noise_mask(tokens: Sequence[Hashable], mask: Sequence[bool],
                     make_sentinel: Callable[[int], Hashable] = sentinel) -> tuple[list, list]:
    """(input, target) of span corruption for a given mask: each run of hidden tokens becomes
    one sentinel in the input; the target lists each sentinel followed by the tokens it hides,
    and ends with one more sentinel (as in the T5 paper's figure)."""
    if len(tokens) != len(mask):
        raise ValueError(f"{len(tokens)} tokens but a mask of {len(mask)}")
    inputs, targets, spans = [], [], 0
    for i, (token, hidden) in enumerate(zip(tokens, mask)):
        if hidden:
            if i == 0 or not mask[i - 1]:            # a new span starts
                inputs.append(make_sentinel(spans))
                targets.append(make_sentinel(spans))
                spans += 1
            targets.append(token)
        else:
            inputs.append(token)
    targets.append(make_sentinel(spans))
    return inputs, targets


def span_corrupt(tokens: Sequence[Hashable], rate: float = 0.15, mean_span: float = 3.0,
                 generator: torch.Generator | None = None, roll: bool = True,
                 make_sentinel: Callable[[int], Hashable] = sentinel) -> tuple[list, list]:
    """T5's pre-training objective on one sequence: hide about ``rate`` of the tokens, in spans
    of ``mean_span`` on average (see :func:`noise_mask`), each span replaced by one sentinel in
    the input; the target is the sentinels, each followed by what it hides.  Returns
    (input, target); T5 pre-trains with ``rate=0.15, mean_span=3``.

    >>> g = torch.Generator().manual_seed(0)
    >>> inp, tgt = span_corrupt("Thank you for inviting me to your party last week .".split(), 0.25, 2, g)
    >>> span_uncorrupt(inp, tgt) == "Thank you for inviting me to your party last week .".split()
    True
    """
    return apply_noise_mask(tokens, noise_mask(len(tokens), rate, mean_span, generator, roll), make_sentinel)


def span_uncorrupt(inputs: Sequence[Hashable], targets: Sequence[Hashable],
                   make_sentinel: Callable[[int], Hashable] = sentinel) -> list:
    """Put the hidden spans of ``targets`` back into ``inputs``: the inverse of :func:`span_corrupt`."""
    spans: dict[Hashable, list] = {}
    current = None
    for token in targets:
        if token == make_sentinel(len(spans)):
            current = token
            spans[current] = []
        elif current is None:
            raise ValueError(f"the target must start with {make_sentinel(0)!r}, got {token!r}")
        else:
            spans[current].append(token)
    out = []
    for token in inputs:
        out += spans[token] if token in spans else [token]
    return out


# ----------------------------------------------------------------------------- batches

def pad_batch(sequences: Sequence[Sequence[int]], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to one length: (ids (B, L), mask (B, L), True on real tokens)."""
    if not sequences:
        raise ValueError("an empty batch")
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences])
    return ids, torch.arange(length)[None, :] < lengths[:, None]


def teacher_forcing(targets: Sequence[Sequence[int]], bos: int = BOS, eos: int = EOS,
                    pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's input and labels for a batch of answers.

    The decoder reads ``[BOS] t1 t2 ... tn`` and must predict ``t1 t2 ... tn [EOS]``: the labels
    are the input shifted left by one.  Shorter answers are padded with ``pad`` in both.
    """
    decoder_in, _ = pad_batch([[bos] + list(t) for t in targets], pad)
    labels, _ = pad_batch([list(t) + [eos] for t in targets], pad)
    return decoder_in, labels


@dataclass
class Batch:
    src: torch.Tensor          # (B, S) encoder input, right-padded
    src_mask: torch.Tensor     # (B, S) True on real tokens
    decoder_in: torch.Tensor   # (B, T) [BOS] + answer, padded
    labels: torch.Tensor       # (B, T) answer + [EOS], padded with PAD (ignored by the loss)


def make_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Batch:
    """A :class:`Batch` from (source ids, target ids) pairs."""
    src, src_mask = pad_batch([s for s, _ in pairs])
    decoder_in, labels = teacher_forcing([t for _, t in pairs])
    return Batch(src, src_mask, decoder_in, labels)


def sequence_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy (in nats) of the answer tokens and [EOS]; padding is ignored."""
    logits = model(batch.src, batch.decoder_in, batch.src_mask)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=PAD)


# ----------------------------------------------------------------------------- decoding and scoring

@torch.no_grad()
def predict(model, sources: Sequence[Sequence[int]], max_len: int = 16, batch_size: int = 500,
            use_cache: bool = True) -> list[list[int]]:
    """Greedy answers (ids, without [BOS] and [EOS]) for a list of encoded sources, in batches."""
    out: list[list[int]] = []
    for i in range(0, len(sources), batch_size):
        src, mask = pad_batch(sources[i:i + batch_size])
        out += model.generate(src, BOS, EOS, max_len, src_padding_mask=mask, use_cache=use_cache)
    return out


def exact_match(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_len: int | None = None,
                batch_size: int = 500) -> float:
    """The fraction of pairs whose greedy answer equals the target exactly, every token.

    ``max_len`` (the most tokens generated) defaults to the longest target plus 4, so that a
    model that does not stop still ends."""
    if not pairs:
        raise ValueError("no pairs to score")
    max_len = max_len or max(len(t) for _, t in pairs) + 4
    predictions = predict(model, [s for s, _ in pairs], max_len, batch_size)
    return sum(list(p) == list(t) for p, (_, t) in zip(predictions, pairs)) / len(pairs)


# ----------------------------------------------------------------------------- training

@dataclass
class Seq2SeqHistory:
    """What happened while training an encoder-decoder."""

    step: list[int] = field(default_factory=list)             # at each evaluation
    train_loss: list[float] = field(default_factory=list)     # mean nats per answer token since the last
    valid_exact_match: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    steps_done: int = 0
    train_cpu_seconds: float = 0.0                            # training steps only
    snapshots: dict[int, dict] = field(default_factory=dict)  # step -> a copy of the weights then


def train_seq2seq(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], config: TrainConfig = TrainConfig(),
                  valid_pairs: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
                  snapshots: Sequence[int] = ()) -> Seq2SeqHistory:
    """Train an encoder-decoder on (source ids, target ids) pairs with teacher forcing.

    Uses ``config.steps``, ``batch_size``, ``lr`` with its warm-up and cosine schedule
    (:meth:`TrainConfig.lr_at`), ``weight_decay``, ``grad_clip``, ``eval_every`` and ``seed``
    (for the order of the examples); the examples are shuffled anew at every pass.  Every
    ``eval_every`` steps the exact match on ``valid_pairs`` (if given) is recorded, and after
    each step listed in ``snapshots`` a copy of the weights is kept in ``history.snapshots``
    (load one with ``model.load_state_dict``), to look at a half-trained model.
    """
    if not pairs:
        raise ValueError("no training pairs")
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    history, losses, order, position = Seq2SeqHistory(), [], torch.randperm(len(pairs), generator=generator), 0
    last = min(config.steps, config.stop_after or config.steps)
    model.train()
    for step in range(last):
        start = time.process_time()
        if position + config.batch_size > len(pairs):
            order, position = torch.randperm(len(pairs), generator=generator), 0
        batch = make_batch([pairs[i] for i in order[position:position + config.batch_size].tolist()])
        position += config.batch_size
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        loss = sequence_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.train_cpu_seconds += time.process_time() - start
        history.steps_done = step + 1
        losses.append(loss.item())
        if step + 1 in snapshots:
            history.snapshots[step + 1] = copy.deepcopy(model.state_dict())
        if (step + 1) % config.eval_every == 0 or step + 1 == last:
            history.step.append(step + 1)
            history.train_loss.append(float(np.mean(losses)))
            history.cpu_seconds.append(round(history.train_cpu_seconds, 3))
            if valid_pairs:
                history.valid_exact_match.append(exact_match(model, valid_pairs))
                model.train()
            losses = []
    model.eval()
    return history


def char_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The fraction of reference characters that the prediction has at the same position (a
    short prediction misses the rest, extra characters are not counted): a kinder score than
    exact match, which gives nothing for an answer with one character wrong."""
    right = sum(a == b for p, r in zip(predictions, references) for a, b in zip(p, r))
    return right / sum(len(r) for r in references)


def accuracy_by(predictions: Sequence[str], references: Sequence[str], keys: Sequence) -> dict:
    """Exact-match accuracy and count for each key (e.g. the number of digits): {key: (acc, n)}."""
    groups: dict = {}
    for p, r, k in zip(predictions, references, keys):
        right, total = groups.get(k, (0, 0))
        groups[k] = (right + (p == r), total + 1)
    return {k: (right / total, total) for k, (right, total) in sorted(groups.items())}
