"""Instructions with answers a program can check: the data of the alignment chapter.

Alignment (对齐) turns a base model, which continues text, into an assistant, which answers a
request.  To *measure* that on one CPU core we need requests whose answers are right or wrong,
so that no human has to judge them.  Four small tasks, each asked in English and in Chinese:

==============  ==================================  ===========
task            a request                           its answer
==============  ==================================  ===========
``add``         What is 23+58?  /  23加58等于几？     81
``to_digits``   Write 三百零五 in digits.            305
``to_chinese``  用汉字写出305。                       三百零五
``reverse``     Reverse the word night.              thgin
==============  ==================================  ===========

Each task's problems are split once into train, valid and test that share no problem (for the
two numeral tasks, no *number*: knowing 305 one way is knowing it the other way).

The same problems appear in two forms:

- **raw**, as a base model would meet them in pre-training text: ``23+58=81``,
  ``三百零五=305``, ``305=三百零五``, ``reverse night: thgin``.  :func:`pretraining_text`
  mixes training problems written this way into Shakespeare, so that the base model *can*
  do the tasks when a prompt looks like its training text (few-shot, :func:`few_shot_prompt`);
- **chat**, a conversation in roles (:class:`ChatTemplate`), which only a fine-tuned model
  answers: ``<|user|>What is 23+58?<|end|><|assistant|>81<|end|>``.

>>> tasks = instruction_tasks()
>>> add = tasks["add"]
>>> add.request((23, 58), "en"), add.answer((23, 58)), add.raw((23, 58))
('What is 23+58?', '81', '23+58=81')
>>> tasks["to_chinese"].request(305, "zh"), tasks["to_chinese"].answer(305)
('用汉字写出305。', '三百零五')
>>> add.correct((23, 58), " 81 ")
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .numerals import NUMERAL_CHARS, chinese_numeral

LANGUAGES = ("en", "zh")
"""Every request is written in English and in Chinese."""

SPLIT_SIZES = {"valid": 100, "test": 100}
"""Problems held out per task: 100 to choose recipes on, 100 to report."""

NUMBERS = 1000
"""The numeral tasks use the numbers 0-999."""

WORD_LENGTHS = (3, 6)
"""The reverse task's words have 3 to 6 letters."""


@dataclass(frozen=True)
class Task:
    """One task: how its requests are asked (``en``, ``zh``), answered, and written raw."""

    name: str
    requests: dict[str, str]     # language -> request with one {x}
    raw_form: str                # the problem as pre-training text, with {x} and {y}
    problems: dict[str, list] = field(repr=False, default_factory=dict)   # split -> problems

    def text_of(self, problem) -> str:
        return f"{problem[0]}+{problem[1]}" if self.name == "add" else str(problem)

    def request(self, problem, language: str = "en") -> str:
        if language not in LANGUAGES:
            raise ValueError(f"language is one of {LANGUAGES}, got {language!r}")
        x = chinese_numeral(problem) if self.name == "to_digits" else self.text_of(problem)
        if self.name == "add":
            x = f"{problem[0]}+{problem[1]}" if language == "en" else f"{problem[0]}加{problem[1]}"
        return self.requests[language].format(x=x)

    def answer(self, problem) -> str:
        """The one right answer."""
        if self.name == "add":
            return str(problem[0] + problem[1])
        if self.name == "to_digits":
            return str(problem)
        if self.name == "to_chinese":
            return chinese_numeral(problem)
        return problem[::-1]

    def raw(self, problem) -> str:
        """The problem and its answer as a line of pre-training text."""
        x = chinese_numeral(problem) if self.name == "to_digits" else self.text_of(problem)
        return self.raw_form.format(x=x, y=self.answer(problem))

    def raw_prompt(self, problem) -> str:
        """A raw line cut before its answer: what a base model is asked to complete."""
        line = self.raw(problem)
        return line[: len(line) - len(self.answer(problem))]

    def correct(self, problem, response: str) -> bool:
        """Is ``response`` the right answer?  Surrounding spaces are forgiven, nothing else."""
        return response.strip() == self.answer(problem)


def _words(text: str) -> list[str]:
    from ..tokenizers.symbols import words

    low, high = WORD_LENGTHS
    return sorted({w for w in words(text) if low <= len(w) <= high and w.isalpha() and w != w[::-1]})


def _split(items: list, seed: int) -> dict[str, list]:
    """Shuffle once, then test, valid and the rest for train."""
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    test, valid = SPLIT_SIZES["test"], SPLIT_SIZES["valid"]
    return {"test": items[:test], "valid": items[test:test + valid], "train": items[test + valid:]}


@lru_cache(maxsize=None)
def instruction_tasks(seed: int = 0) -> dict[str, Task]:
    """The four tasks with their problems split (the same on every machine for a seed)."""
    from .corpora import shakespeare

    pairs = [(a, b) for a in range(100) for b in range(100)]
    numbers = _split(list(range(NUMBERS)), seed + 1)          # shared by both numeral tasks
    words = _words(shakespeare().train)
    tasks = [
        Task("add", {"en": "What is {x}?", "zh": "{x}等于几？"}, "{x}={y}", _split(pairs, seed)),
        Task("to_digits", {"en": "Write {x} in digits.", "zh": "把{x}写成数字。"}, "{x}={y}", numbers),
        Task("to_chinese", {"en": "Write {x} in Chinese.", "zh": "用汉字写出{x}。"}, "{x}={y}", numbers),
        Task("reverse", {"en": "Reverse the word {x}.", "zh": "把{x}倒过来写。"}, "reverse {x}: {y}",
             _split(words, seed + 2)),
    ]
    return {task.name: task for task in tasks}


@dataclass(frozen=True)
class Example:
    """One request in one language, with its task and problem (to check a response)."""

    task: str
    problem: object
    language: str

    def request(self, tasks: dict[str, Task] | None = None) -> str:
        return (tasks or instruction_tasks())[self.task].request(self.problem, self.language)

    def answer(self, tasks: dict[str, Task] | None = None) -> str:
        return (tasks or instruction_tasks())[self.task].answer(self.problem)

    def correct(self, response: str, tasks: dict[str, Task] | None = None) -> bool:
        return (tasks or instruction_tasks())[self.task].correct(self.problem, response)


def examples(split: str, per_task: int | None = None, seed: int = 0) -> list[Example]:
    """A split's requests: every problem of every task, in one language, English and Chinese in
    turn (problem i in ``LANGUAGES[i % 2]``), cut to the first ``per_task`` problems of each task,
    tasks interleaved."""
    tasks = instruction_tasks(seed)
    lists = []
    for task in tasks.values():
        problems = task.problems[split][:per_task]
        lists.append([Example(task.name, p, LANGUAGES[i % 2]) for i, p in enumerate(problems)])
    out = []
    for row in range(max(map(len, lists))):
        out += [items[row] for items in lists if row < len(items)]
    return out


# --------------------------------------------------------------------------- the chat template

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
PAD = "[PAD]"
CHAT_SPECIALS = (PAD, SYSTEM, USER, ASSISTANT, END)
"""The special tokens of the chat vocabulary, ids 0-4: padding, one marker per role, and the
end of a turn (the assistant's "stop" token)."""


def chat_tokenizer():
    """Characters of Shakespeare, of the Chinese numerals and of every request, after the chat
    specials.  The base model is pre-trained with this vocabulary; it never sees the specials
    until fine-tuning."""
    from ..tokenizers import CharTokenizer
    from .corpora import shakespeare

    text = set(shakespeare().alphabet) | set(NUMERAL_CHARS) | set("+=:")
    for task in instruction_tasks().values():
        for template in task.requests.values():
            text |= set(template.replace("{x}", ""))
    text |= set("加")
    return CharTokenizer(sorted(text), specials=CHAT_SPECIALS)


class ChatTemplate:
    """Conversations to ids and back.  A message is ``{"role": ..., "content": ...}`` with role
    ``system``, ``user`` or ``assistant``; each becomes its role's token, its text, and ``<|end|>``::

        <|user|>What is 23+58?<|end|><|assistant|>81<|end|>

    The template is **lossless**: :meth:`decode` gives back exactly the messages :meth:`encode`
    was given (a test checks it).  ``add_generation_prompt`` ends the ids with ``<|assistant|>``,
    the cue for the model to answer; generation stops at ``<|end|>``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.role_ids = {role: tokenizer.special_tokens[token] for role, token in ROLES.items()}
        self.end_id = tokenizer.special_tokens[END]
        self.pad_id = tokenizer.special_tokens[PAD]

    def encode(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> list[int]:
        ids = []
        for message in messages:
            role, content = message.get("role"), message.get("content")
            if role not in self.role_ids:
                raise ValueError(f"a message's role is one of {sorted(self.role_ids)}, got {role!r}")
            if not isinstance(content, str):
                raise ValueError(f"a message's content is a string, got {type(content).__name__}")
            ids += [self.role_ids[role], *self.tokenizer.encode(content), self.end_id]
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
        return ids

    def decode(self, ids: Sequence[int]) -> list[dict]:
        """The messages in ``ids``; a last turn without ``<|end|>`` (a cut-off answer) is kept."""
        roles = {i: role for role, i in self.role_ids.items()}
        messages, role, body = [], None, []
        for i in list(ids):
            if i in roles:
                if role is not None:
                    raise ValueError(f"a {roles[i]} turn starts inside a {role} turn (no {END})")
                role, body = roles[i], []
            elif i == self.end_id:
                if role is None:
                    raise ValueError(f"{END} outside a turn")
                messages.append({"role": role, "content": self.tokenizer.decode(body)})
                role = None
            elif role is None:
                raise ValueError("text outside a turn")
            else:
                body.append(i)
        if role is not None and body:
            messages.append({"role": role, "content": self.tokenizer.decode(body)})
        return messages

    def prompt(self, request: str) -> list[int]:
        """One user turn and the cue to answer."""
        return self.encode([{"role": "user", "content": request}], add_generation_prompt=True)

    def response(self, answer: str) -> list[int]:
        """An assistant's answer as the model writes it: the text, then ``<|end|>``."""
        return [*self.tokenizer.encode(answer), self.end_id]


# --------------------------------------------------------------------------- raw text

def raw_lines(split: str, seed: int = 0) -> list[str]:
    """Every problem of a split written raw, one line each, tasks in turn."""
    tasks = instruction_tasks(seed)
    return [tasks[e.task].raw(e.problem) for e in examples(split, seed=seed)]


def few_shot_prompt(task: Task, problem, shots: int = 3, seed: int = 0) -> str:
    """How one asks a base model: ``shots`` solved training problems of the task, one per line,
    then the problem cut before its answer (GPT-3's few-shot prompting)."""
    rng = np.random.default_rng(seed)
    train = task.problems["train"]
    solved = [train[i] for i in rng.choice(len(train), size=shots, replace=False)]
    return "".join(task.raw(p) + "\n" for p in solved) + task.raw_prompt(problem)


TASK_SHARE = 0.2
"""The share of the pre-training text that is raw task lines; the rest is Shakespeare."""
BLOCK_LINES = 8
"""Raw lines come in blocks of one task, as a web page would list problems of one kind."""


def pretraining_text(split: str = "train", share: float = TASK_SHARE, seed: int = 0) -> str:
    """Shakespeare's ``split`` with blocks of raw problems of the same split mixed in, so that raw
    lines are about ``share`` of the characters.  Blocks of ``BLOCK_LINES`` lines of one task go
    between paragraphs of Shakespeare (at blank lines), each block followed by a blank line; the
    training problems are repeated as often as the share needs."""
    from .corpora import shakespeare

    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    tasks = instruction_tasks(seed)
    book = shakespeare().split(split)
    paragraphs = book.split("\n\n")
    target = share / (1 - share) * len(book)
    blocks, size = [], 0
    names = list(tasks)
    while size < target:
        task = tasks[names[len(blocks) % len(names)]]
        problems = task.problems[split]
        chosen = rng.choice(len(problems), size=BLOCK_LINES, replace=len(problems) < BLOCK_LINES)
        block = "\n".join(task.raw(problems[i]) for i in chosen)
        blocks.append(block)
        size += len(block) + 2
    places = np.sort(rng.choice(len(paragraphs), size=len(blocks), replace=True))
    out, b = [], 0
    for i, paragraph in enumerate(paragraphs):
        out.append(paragraph)
        while b < len(blocks) and places[b] == i:
            out.append(blocks[b])
            b += 1
    return "\n\n".join(out)
