"""Recipes: the long runs of the course, each made once by a command and committed with its log.

A lab must run in a few minutes, but counting is strong: a Kneser-Ney n-gram fitted in seconds is
hard to beat with a neural model trained for three minutes on one core.  So a rung of the ladder,
or a pre-trained model, may come from a longer run (at most 30 minutes on one core), made by

    python -m tinylm recipes                     # the recipes, one line each
    python -m tinylm train lstm                  # train one; writes checkpoints/lstm/
    python -m tinylm train lstm --stop-after 200 # only its first 200 steps (a trial, marked in the log)

The command seeds everything, uses one thread with deterministic algorithms, trains the recipe for
its fixed number of steps (the schedule depends on steps, never on the clock, so the run repeats;
``--stop-after`` runs the start of that same schedule), and writes a checkpoint
(:mod:`tinylm.checkpoint`) whose log records the recipe, the training history, the CPU-seconds,
the peak memory, the machine and the code's commit.  A lab then loads it with
:func:`tinylm.load` and scores it, so nbval checks the numbers the book quotes.

Three kinds of recipe:

- :class:`LanguageModelRecipe`: a causal language model on a corpus (the MLP, RNN, LSTM and GPT
  rungs);
- :class:`MaskedLMRecipe`: BERT-style pre-training (the Chinese encoder of Lab 12);
- :class:`NGramRecipe`: an n-gram rung; counting takes seconds, so :func:`tinylm.load` counts it
  when it is loaded instead of storing its tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .. import data, system
from ..evaluation.metrics import scored_chars
from ..models import build
from ..tokenizers import BERT_SPECIALS, BPETokenizer, CharTokenizer
from .causal_lm import EVAL_TOKENS, CausalLM
from .loop import TrainConfig, one_thread_deterministic, seed_everything, train
from .masked_lm import MaskedLM, fixed_masked_batches, text_stream


def make_tokenizer(tokens: str, corpus: data.Corpus):
    """``"char"``: the corpus's characters; ``"bpe-N"``: byte-level BPE with N merges learnt on its
    training split (deterministic, a second or two)."""
    if tokens == "char":
        return CharTokenizer(corpus.alphabet)
    if tokens.startswith("bpe-") and tokens.removeprefix("bpe-").isdigit():
        return BPETokenizer.train(corpus.train, int(tokens.removeprefix("bpe-")))
    raise ValueError(f"unknown tokens {tokens!r}: 'char' or 'bpe-N'")


def encode(tokenizer, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


@dataclass(frozen=True)
class Recipe:
    """What every recipe has: a name, what it makes, and its stage on the ladder."""

    kind: ClassVar[str] = ""
    name: str
    description: str
    stage: str

    def steps(self) -> int | None:
        return None

    def summary(self) -> str:
        """One line for ``python -m tinylm recipes``."""
        steps = self.steps()
        return f"{self.name:<12} {self.kind:<10} {f'{steps:,} steps' if steps else 'counted':>12}  {self.description}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def run(self, out_dir: Path, stop_after: int | None = None) -> dict:
        """Make the recipe's model on one thread, deterministically; write ``out_dir/NAME/``;
        return the log."""
        from ..checkpoint import save

        if stop_after is not None and (self.steps() is None or not 1 <= stop_after <= self.steps()):
            raise ValueError(f"--stop-after must be between 1 and {self.steps()} for {self.name}"
                             if self.steps() else f"{self.name} is counted, not trained: it has no steps to stop after")
        with one_thread_deterministic():
            # the code as it was when the run started (the tree may change while a long run goes on)
            started, wall, code = datetime.datetime.now(datetime.timezone.utc), time.monotonic(), system.code_commit()
            model, tokenizer, log = self._make(stop_after)
            log.update(wall_seconds=round(time.monotonic() - wall, 1), peak_mb=round(system.peak_memory_mb()),
                       machine={**system.machine(), "threads": torch.get_num_threads()},
                       started=started.isoformat(timespec="seconds"), stop_after=stop_after, code=code)
        save(Path(out_dir) / self.name, model, tokenizer, log)
        return log

    def _make(self, stop_after: int | None):
        raise NotImplementedError

    def _log(self, model, **extra) -> dict:
        return {"name": self.name, "description": self.description, "stage": self.stage,
                "recipe": self.to_dict(), "parameters": model.num_parameters(), **extra}


def _trained_log(recipe: Recipe, model, history, **extra) -> dict:
    return recipe._log(model, history=history.to_dict(), train_cpu_seconds=round(history.train_cpu_seconds, 1),
                       **extra)


@dataclass(frozen=True)
class LanguageModelRecipe(Recipe):
    """A causal language model trained on a corpus, validated on the first ``eval_chars``
    characters of its validation split (the same text whatever the tokens)."""

    kind: ClassVar[str] = "causal-lm"
    family: str = "mlp"                # a key of tinylm.models.FAMILIES
    model: dict = field(default_factory=dict)   # the model's configuration, without vocab_size
    train: TrainConfig = TrainConfig()
    corpus: str = "shakespeare"
    tokens: str = "char"               # "char", or "bpe-N": byte-level BPE with N merges learnt on train
    eval_chars: int = EVAL_TOKENS

    def steps(self) -> int:
        return self.train.steps

    def tokenizer(self):
        return make_tokenizer(self.tokens, data.corpus(self.corpus))

    def build(self, vocab_size: int):
        return build(self.family, dict(self.model, vocab_size=vocab_size))

    def objective(self, tokenizer) -> CausalLM:
        """The recipe's objective: all of the training split, the validation text's first
        ``eval_chars`` characters, losses in bits per character.

        Validation is the ladder's measure: bits per character of the characters predicted (all
        but the first token's, which has no context and is not scored)."""
        corpus = data.corpus(self.corpus)
        valid_ids = encode(tokenizer, corpus.valid[: self.eval_chars])
        subwords = self.tokens != "char"
        return CausalLM(encode(tokenizer, corpus.train), valid_ids, eval_tokens=None,
                        train_chars=len(corpus.train) if subwords else None,
                        valid_chars=scored_chars(tokenizer, valid_ids) if subwords else None)

    def _make(self, stop_after):
        tokenizer = self.tokenizer()
        objective = self.objective(tokenizer)
        seed_everything(self.train.seed)
        model = self.build(len(tokenizer))
        history = train(model, objective, dataclasses.replace(self.train, stop_after=stop_after))
        return model, tokenizer, _trained_log(self, model, history)


@dataclass(frozen=True)
class ChatBaseRecipe(LanguageModelRecipe):
    """The base model of the alignment chapter: a character GPT pre-trained on Shakespeare with
    raw task lines mixed in (:func:`tinylm.data.instructions.pretraining_text`), over the chat
    vocabulary (its special tokens unused until fine-tuning).  Validated on the validation
    split's mixture."""

    kind: ClassVar[str] = "chat-base"

    def tokenizer(self):
        from ..data.instructions import chat_tokenizer

        return chat_tokenizer()

    def objective(self, tokenizer) -> CausalLM:
        from ..data.instructions import pretraining_text

        return CausalLM(encode(tokenizer, pretraining_text("train")),
                        encode(tokenizer, pretraining_text("valid")[: self.eval_chars]), eval_tokens=None)


@dataclass(frozen=True)
class MaskedLMRecipe(Recipe):
    """BERT-style character MLM pre-training on People's Daily (train split) and, if ``reviews``,
    the training reviews' text (never their labels)."""

    kind: ClassVar[str] = "masked-lm"
    model: dict = field(default_factory=dict)   # TransformerConfig fields, without vocab_size and pad_id
    train: TrainConfig = TrainConfig()
    min_count: int = 2                 # characters rarer than this in the text become [UNK]
    reviews: bool = True
    valid_batches: int = 8

    def steps(self) -> int:
        return self.train.steps

    def documents(self, split: str) -> list[str]:
        """The unlabelled text of a split: People's Daily paragraphs, then (if the recipe says so)
        the reviews' text without labels.  Test reviews are never used for pre-training."""
        if split == "test":
            raise ValueError("pre-training never reads the test split")
        documents = data.peoples_daily().split(split).splitlines()
        if self.reviews:
            documents += data.sentiment().texts(split)
        return documents

    def _make(self, stop_after):
        documents = self.documents("train")
        tokenizer = CharTokenizer.from_texts(documents, min_count=self.min_count, specials=BERT_SPECIALS)
        stream = text_stream(tokenizer, documents)
        valid_stream = text_stream(tokenizer, self.documents("valid"))
        valid = fixed_masked_batches(valid_stream, len(tokenizer), self.valid_batches, self.train.batch_size,
                                     self.train.context)
        seed_everything(self.train.seed)
        model = build("encoder", dict(self.model, vocab_size=len(tokenizer), pad_id=tokenizer.pad_id))
        history = train(model, MaskedLM(stream, valid), dataclasses.replace(self.train, stop_after=stop_after))
        return model, tokenizer, _trained_log(
            self, model, history,
            text={"documents": len(documents), "tokens": len(stream), "valid_tokens": len(valid_stream)})


@dataclass(frozen=True)
class NGramRecipe(Recipe):
    """An n-gram model counted on a corpus's training split."""

    kind: ClassVar[str] = "ngram"
    order: int = 3
    method: str = "kneser-ney"
    corpus: str = "shakespeare"
    tokens: str = "char"

    def fit(self):
        """``(model, tokenizer, log)``: the counted model, as :func:`tinylm.load` returns it."""
        from ..models import NGramModel

        corpus = data.corpus(self.corpus)
        start = time.process_time()
        tokenizer = make_tokenizer(self.tokens, corpus)
        model = NGramModel(self.order, len(tokenizer), self.method).fit(encode(tokenizer, corpus.train))
        seconds = time.process_time() - start
        return model, tokenizer, self._log(model, train_cpu_seconds=round(seconds, 1), counted_when_loaded=True)

    def _make(self, stop_after):
        model, tokenizer, log = self.fit()
        return model, tokenizer, dict(log, counted_when_loaded=False)


GPT_BLOCKS = dict(d_model=256, n_heads=4, n_layers=4, max_len=256)
"""The shape of both GPT rungs."""

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    NGramRecipe("kn7", "Kneser-Ney 7-gram over characters (the order chosen on validation in Lab 3)", "SLM",
                order=7),
    NGramRecipe("kn5-bpe512", "Kneser-Ney 5-gram over byte-level BPE tokens: 256 merges, 512 tokens "
                              "(chosen on validation in Lab 5)", "SLM", order=5, tokens="bpe-256"),
    LanguageModelRecipe(
        "mlp", "Bengio-style MLP over the last 8 characters (embeddings 32, hidden 512)", "NLM",
        family="mlp", model=dict(context=8, d_embed=32, d_hidden=512, dropout=0.1),
        train=TrainConfig(steps=3000, batch_size=32, context=128, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                          eval_every=500)),
    LanguageModelRecipe(
        "rnn", "plain tanh RNN, one layer of 512 (Elman)", "NLM",
        family="recurrent", model=dict(cell="rnn", d_embed=64, d_state=512, dropout=0.1),
        train=TrainConfig(steps=4000, batch_size=32, context=128, lr=1e-3, warmup=100, min_lr_ratio=0.05,
                          eval_every=500, grad_clip=0.5)),
    LanguageModelRecipe(
        "lstm", "LSTM, one layer of 512", "NLM",
        family="recurrent", model=dict(cell="lstm", d_embed=64, d_state=512, dropout=0.1),
        train=TrainConfig(steps=6000, batch_size=32, context=128, lr=3e-3, warmup=100, min_lr_ratio=0.05,
                          eval_every=500)),
    LanguageModelRecipe(
        "gpt", "GPT with LLaMA-style blocks (RMSNorm, rotary positions, SwiGLU): 4 blocks of width 256, "
               "4 heads, over BPE-1024 tokens; dropout 0.1 and weight decay 0.1", "PLM",
        family="decoder", model=dict(GPT_BLOCKS, norm="rms", positions="rotary", mlp="swiglu", dropout=0.1),
        train=TrainConfig(steps=3700, batch_size=8, context=256, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                          weight_decay=0.1, eval_every=250, precision="bf16"),
        tokens="bpe-1024"),
    LanguageModelRecipe(
        "gpt2style", "GPT with GPT-2's blocks (LayerNorm, learned positions, GELU): 4 blocks of width 256, "
                     "4 heads, over BPE-1024 tokens", "PLM",
        family="decoder", model=dict(GPT_BLOCKS, dropout=0.0),
        train=TrainConfig(steps=4800, batch_size=8, context=256, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                          eval_every=300, precision="bf16"),
        tokens="bpe-1024"),
    ChatBaseRecipe(
        "chat-base", "the alignment chapter's base model: a character GPT (LLaMA-style blocks, 4 of width 128) "
                     "pre-trained on Shakespeare with raw arithmetic, numeral and reversal lines mixed in", "LLM",
        family="decoder", model=dict(d_model=128, n_heads=4, n_layers=4, max_len=128, norm="rms",
                                     positions="rotary", mlp="swiglu", dropout=0.0),
        train=TrainConfig(steps=1800, batch_size=32, context=128, lr=3e-3, warmup=100, min_lr_ratio=0.1,
                          weight_decay=0.1, eval_every=200)),
    MaskedLMRecipe(
        "mlm-zh", "BERT-style character MLM on Chinese: People's Daily (train split) and the training "
                  "reviews' text", "PLM",
        # BERT is post-norm with learned positions; a short run on one core learns faster with
        # pre-norm (stable at a higher learning rate) and rotary positions (nearby characters are
        # told apart from the start, instead of learning 64 position vectors first).
        model=dict(d_model=128, n_heads=4, n_layers=4, d_ff=512, max_len=64, norm_first=True, positions="rotary",
                   dropout=0.0),
        train=TrainConfig(steps=1800, batch_size=64, context=64, lr=2e-3, warmup=100, min_lr_ratio=0.1,
                          weight_decay=0.01, grad_clip=1.0, eval_every=100, seed=0)),
]}
"""Every recipe, by name."""


@dataclass(frozen=True)
class Choice:
    """How a recipe came to be what it is.  The course's rule (CONTRIBUTING.md): a recipe is chosen
    on validation only; the test split is scored once, for the recipe chosen.  ``alternatives``
    are recipes compared with it on validation; ``python -m tinylm train NAME --alternatives``
    runs them and keeps their logs (no weights) in ``results/selection/``, and a test checks that
    the chosen recipe's best validation score is the best of them."""

    how: str
    alternatives: tuple = ()


CHOICES: dict[str, Choice] = {
    "kn7": Choice("The order with the lowest validation bpc in Lab 3's sweep over orders; the test split "
                  "is scored once, for that order."),
    "kn5-bpe512": Choice("The vocabulary and order with the lowest validation bpc in Lab 5's sweep over "
                         "four vocabularies and three orders each; the test split is scored once, for them."),
    "mlp": Choice("Shape and learning rate fixed when the recipe was written (d157b4e); the steps cut from "
                  "6,000 to 3,000 to fit the time budget (3996358), before the first test score of a neural "
                  "rung was reported (6e5f80e)."),
    "rnn": Choice("As the MLP: written in d157b4e, steps cut from 6,000 to 4,000 for time (3996358), before "
                  "the first test score of a neural rung was reported (6e5f80e)."),
    "lstm": Choice("Written in d157b4e and unchanged since, before the first test score of a neural rung "
                   "was reported (6e5f80e)."),
    "gpt2style": Choice("Written as the recipe 'gpt4' (35e18b8) and run once for comparison (6c14f5b); it is "
                        "not on the ladder and no choice uses its test score."),
    "gpt": Choice(
        "The recipe changed (dropout 0 to 0.1, weight decay 0.01 to 0.1, 4,000 to 3,700 steps) in the "
        "commit that first reported its test score (a472fab), and the runs behind that change were not "
        "logged.  To check the choice on validation alone, the recipe as it was before (6c14f5b) was run "
        "again on 2026-12-04 ('gpt-no-regularisation'); its log is in results/selection/.  It ran in fp32, "
        "not bf16: the machine of that run has no bfloat16 matrix instructions (AVX2 only), where a bf16 "
        "step took 21 s instead of 0.9 s; bf16 changes only how matrix products are rounded.  Its best "
        "validation score, 2.0962 bpc at step 3,000 (no better after it: 2.1005 at step 4,000), is worse than the "
        "recipe's 2.0682, so the recipe stands on validation alone.  3,700 steps give about the training "
        "compute of the GPT-2-style run.",
        alternatives=(LanguageModelRecipe(
            "gpt-no-regularisation", "the GPT recipe before a472fab: LLaMA-style blocks, no dropout, weight "
                                     "decay 0.01, 4,000 steps", "PLM",
            family="decoder", model=dict(GPT_BLOCKS, norm="rms", positions="rotary", mlp="swiglu"),
            train=TrainConfig(steps=4000, batch_size=8, context=256, lr=2e-3, warmup=100, min_lr_ratio=0.05,
                              eval_every=250, precision="fp32"),
            tokens="bpe-1024"),)),
    "chat-base": Choice("Written with the alignment chapter and run once: its size and steps were set to fit "
                        "about 15 minutes on one core before it ran; no alternative was tried.  Pre-training reads "
                        "no test problem and no test text.  It ran from commit 855e514; its log names the commit "
                        "at its end (2303a10, with other files of the tree being edited meanwhile), because it "
                        "ran before recipes recorded the commit at their start (5c1c05b).  Nothing it imports "
                        "changed between the two commits but DecoderLM.forward, split into features() and the "
                        "head with the same arithmetic."),
    "mlm-zh": Choice("Written with Lab 12 (2e344da), in the commit that first reported the fine-tuning "
                     "results it leads to; the runs that chose it were not logged.  Pre-training never "
                     "reads a test split."),
}
"""How each recipe was chosen."""


def run_alternatives(name: str, out_dir: Path) -> list[dict]:
    """Run the alternatives of recipe ``name`` (validation only: they are never scored on test) and
    write each one's log to ``out_dir/ALTERNATIVE.json``; return the logs."""
    import json
    import tempfile

    logs = []
    for alternative in CHOICES[name].alternatives:
        with tempfile.TemporaryDirectory() as scratch:
            alternative.run(Path(scratch))
            log = json.loads((Path(scratch) / alternative.name / "log.json").read_text())
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{alternative.name}.json").write_text(json.dumps(log, indent=1) + "\n")
        logs.append(log)
    return logs
