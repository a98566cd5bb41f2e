"""The ReAct loop: think, act, observe, until the model answers or the step limit is reached.

ReAct (Yao et al., 2023) interleaves **reasoning** and **acting** in one text.  At every step the
model writes a ``Thought:`` (what it needs next) and an ``Action:`` (a tool call, see
:mod:`tinylm.agents.tools`); the program runs the tool and appends ``Observation: ...``, and the
model continues from there.  ``finish[answer]`` ends the run.  The loop (:func:`run`) is short:

1. the policy writes a thought and an action;
2. :meth:`Tools.observe` parses and runs the action; every failure becomes an observation
   ``error: ...`` (never an exception);
3. ``finish`` ends the run (status ``"finished"``); after ``max_steps`` steps without it the run
   ends with status :data:`STEP_LIMIT` and no answer.

The **policy** (策略) is whatever writes thoughts and actions: a scripted one for tests
(:class:`Scripted`), or SmolLM2-135M-Instruct (:class:`LMPolicy`) reading a prompt with the tool
list and a few solved examples (few-shot, :func:`prompt`).  A 135M model is weak at following a
format, so :class:`LMPolicy` has two modes:

- **free** (``constrained=False``): greedy decoding of the thought and the action, stopped at the
  end of the action's line (or at ``Observation:``, which the model must not write itself); the
  action may fail to parse, and the run measures how often it does;
- **constrained** (约束解码, ``constrained=True``): the thought is free (one line), then only text
  that keeps the action a valid call is allowed.  ``Action:`` is forced; the tool's name is the
  registry's name with the highest log-probability (each name's tokens scored after ``Action:``);
  the argument is decoded greedily with the logits of every token that would break the format
  (a line break, a ``[``, a ``]`` not at the token's end, a special token) set to minus infinity,
  until a token ending in ``]`` or a budget of tokens (then ``]`` is forced).  Every action parses.
  With ``tool_first`` (the default) the first action must call a tool, not ``finish``: an answer
  must rest on at least one observation (what chat APIs call a *required* tool choice).  Without
  it SmolLM2 mostly writes ``finish`` at once, after a thought that says it will search.

Both modes are one small step function around the model's logits (:meth:`LMPolicy._next`): the
model's forward with its KV cache (kept across steps, so each step reads only the new text) and
:class:`tinylm.Sampler` at temperature 0 to choose; not a second sampler.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..inference.sampling import GREEDY
from .tools import FINISH, Call, Tools

STEP_LIMIT = "step limit reached"
FINISHED = "finished"

SYSTEM = ("You answer questions by using tools. The tools:\n{tools}\n"
          "Write one Thought line, then one Action line. You then see an Observation, and continue. "
          "Use the calculator for every calculation and search for facts from the book. "
          "When you know the answer, write Action: finish[answer].")
"""The system turn of the agent's prompt; ``{tools}`` is the registry's description."""


@dataclass
class Step:
    """One step of a run: what the model wrote and what it observed."""

    thought: str
    action: str                     # the action's text as written
    call: Call | None               # None when it did not parse
    observation: str

    @property
    def parsed(self) -> bool:
        return self.call is not None


@dataclass
class Run:
    """A run of the loop: the question, its steps, how it ended, the answer (None if it did not finish)."""

    question: str
    steps: list[Step] = field(default_factory=list)
    status: str = STEP_LIMIT
    answer: str | None = None

    def transcript(self) -> str:
        """The run as a reader reads it."""
        lines = [f"Question: {self.question}"]
        for i, s in enumerate(self.steps, start=1):
            lines.append(f"[{i}] Thought: {s.thought}")
            lines.append(f"    Action: {s.action}" + ("" if s.parsed else "   <- does not parse"))
            if s.call is None or s.call.tool != FINISH:
                lines.append(f"    Observation: {s.observation}")
        lines.append(f"=> {self.status}" + (f": {self.answer}" if self.answer is not None else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"question": self.question, "status": self.status, "answer": self.answer,
                "steps": [{"thought": s.thought, "action": s.action, "parsed": s.parsed,
                           "observation": s.observation} for s in self.steps]}


def run(policy, tools: Tools, question: str, max_steps: int = 5) -> Run:
    """Run the ReAct loop for ``question`` with ``policy`` and ``tools``, at most ``max_steps`` actions."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    result = Run(question)
    policy.start(question, tools)
    for _ in range(max_steps):
        thought, action = policy.act()
        call, observation = tools.observe(f"Action: {action}")
        result.steps.append(Step(thought, action, call, observation))
        if call is not None and call.tool == FINISH:
            result.status, result.answer = FINISHED, call.argument
            break
        policy.observe(observation)
    return result


class Scripted:
    """A policy that writes prepared (thought, action) pairs, in order: for tests and examples."""

    def __init__(self, steps):
        self.script = list(steps)

    def start(self, question, tools):
        self.at, self.observations = 0, []

    def act(self):
        step = self.script[min(self.at, len(self.script) - 1)]
        self.at += 1
        return step

    def observe(self, observation):
        self.observations.append(observation)


# ----------------------------------------------------------------------------- the prompt

EXAMPLES = ()
"""Solved examples for the prompt: (question, [(thought, action, observation), ...]); the last
action is a finish.  Set by :mod:`tinylm.agents.tasks` from its development tasks."""


def example_text(question: str, steps) -> str:
    lines = [f"Question: {question}"]
    for thought, action, observation in steps:
        lines += [f"Thought: {thought}", f"Action: {action}"]
        if observation is not None:
            lines.append(f"Observation: {observation}")
    return "\n".join(lines)


def prompt(tools: Tools, question: str, examples=()) -> str:
    """The agent's prompt in SmolLM2's chat format: the system turn (the tools and the rules), each
    solved example as a user turn (its question) and an assistant turn (its thoughts, actions and
    observations), then the question as the user's turn and the assistant's turn opened with
    ``Thought:``."""
    from ..pretrained.smollm2 import chat_prompt

    messages = [{"role": "system", "content": SYSTEM.format(tools=tools.describe())}]
    for q, steps in examples:
        messages += [{"role": "user", "content": f"Question: {q}"},
                     {"role": "assistant", "content": example_text(q, steps).split("\n", 1)[1]}]
    messages.append({"role": "user", "content": f"Question: {question}"})
    return chat_prompt(messages) + "Thought:"


# ----------------------------------------------------------------------------- the model as a policy

@functools.lru_cache(maxsize=2)
def _token_texts(tokenizer) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


@functools.lru_cache(maxsize=2)
def _masks(tokenizer):
    """Boolean masks over the vocabulary: tokens allowed inside a thought (no special token, the
    line may end), inside an argument, and those that end an argument (``]`` last)."""
    texts = _token_texts(tokenizer)
    special = set(tokenizer.special_tokens.values())
    free = torch.tensor([i not in special and t != "" for i, t in enumerate(texts)])
    plain = torch.tensor([i not in special and t != "" and not any(c in t for c in "[]\n\r")
                          for i, t in enumerate(texts)])
    closing = torch.tensor([i not in special and t.count("]") == 1 and t.rstrip(" ").endswith("]")
                            and "[" not in t and "\n" not in t for i, t in enumerate(texts)])
    return free, plain, closing


class LMPolicy:
    """A language model as the policy of :func:`run`, free or constrained (see the module docstring).

    The prompt's part before the question (system turn, tools, examples) is read once and its KV
    cache reused for every question.  ``thought_tokens`` and ``argument_tokens`` cap each part of
    a constrained step; ``step_tokens`` caps a free step."""

    def __init__(self, model, tokenizer, constrained: bool = True, examples=(), tool_first: bool = True,
                 thought_tokens: int = 32, argument_tokens: int = 24, step_tokens: int = 64):
        self.model, self.tok = model, tokenizer
        self.constrained, self.examples, self.tool_first = constrained, tuple(examples), tool_first
        self.thought_tokens, self.argument_tokens, self.step_tokens = thought_tokens, argument_tokens, step_tokens
        self._prefix = None
        self.end_of_turn = tokenizer.special_tokens.get("<|im_end|>")

    # -- the model's state, one step at a time

    def _feed(self, ids: list[int]):
        """Read ``ids`` after what was read so far; the logits of the next token."""
        with torch.no_grad():
            logits, self.state = self.model(torch.tensor([ids], dtype=torch.long), self.state)
        self.read += ids
        self.logits = logits[0, -1]

    def _next(self, allowed: torch.Tensor | None = None) -> int:
        """The constrained step: the greedy choice among the ``allowed`` tokens (all if None),
        read into the state unless it ends the assistant's turn."""
        logits = self.logits if allowed is None else self.logits.masked_fill(~allowed, float("-inf"))
        token = GREEDY.pick(logits, self.read, None)
        if token != self.end_of_turn:
            self._feed([token])
        return token

    def _fork(self):
        from ..models.transformer import KVCache

        copy = KVCache()
        copy.keys, copy.values, copy.length = dict(self.state.keys), dict(self.state.values), self.state.length
        return copy

    # -- the policy protocol

    def start(self, question: str, tools: Tools):
        self.tools, self.acted = tools, 0
        text = prompt(tools, question, self.examples)
        cut = text.rindex("Question: " + question)
        head = self.tok.encode(text[:cut])
        if self._prefix is None or self._prefix[0] != head:
            self.state, self.read = self.model.new_state(), []
            self._feed(head)
            self._prefix = (head, self._fork(), self.logits)
        self.state, self.read, self.logits = self._prefix[1], list(head), self._prefix[2]
        self.state = self._fork()
        self._feed(self.tok.encode(text[cut:]))

    def observe(self, observation: str):
        """Read the observation.  A special token's text in it (``<|im_end|>``) is broken first
        (``< |im_end|>``), so retrieved text cannot end the assistant's turn or open a system turn."""
        for special in self.tok.special_tokens:
            observation = observation.replace(special, special[0] + " " + special[1:])
        self._feed(self.tok.encode(f"Observation: {observation}\nThought:"))

    def act(self) -> tuple[str, str]:
        self.acted += 1
        return self._constrained_step() if self.constrained else self._free_step()

    def _free_step(self) -> tuple[str, str]:
        out = []
        for _ in range(self.step_tokens):
            token = self._next()
            if token == self.end_of_turn:
                break
            out.append(token)
            text = self.tok.decode(out)
            if "Observation:" in text:
                break
            if "Action:" in text and "\n" in text[text.index("Action:"):]:
                break
        text = self.tok.decode(out)
        text = text.split("Observation:")[0]
        if "Action:" in text:
            thought, action = text.split("Action:", 1)
            action = action.split("\n")[0].strip()
        else:
            thought, action = text, ""
        if not self.tok.decode(out).endswith("\n"):
            self._feed(self.tok.encode("\n"))
        return thought.strip(), action

    def _constrained_step(self) -> tuple[str, str]:
        free, plain, closing = _masks(self.tok)
        thought = []
        for _ in range(self.thought_tokens):
            token = self._next(free)
            thought.append(token)
            if "\n" in self.tok.decode([token]):
                break
        text = self.tok.decode(thought)
        if "\n" not in text:
            self._feed(self.tok.encode("\n"))
        thought_text = text.split("\n")[0].strip()
        self._feed(self.tok.encode("Action:"))
        name = self._choose_tool()
        self._feed(self.tok.encode(f" {name}["))
        argument = []
        for _ in range(self.argument_tokens):
            token = self._next(plain | closing)
            argument.append(token)
            if closing[token]:
                break
        else:
            self._feed(self.tok.encode("]"))
        self._feed(self.tok.encode("\n"))
        arg = self.tok.decode(argument)
        arg = arg[:arg.index("]")] if "]" in arg else arg
        return thought_text, f"{name}[{arg.strip()}]"

    def _choose_tool(self) -> str:
        """The tool name with the highest log-probability after ``Action:`` (each name scored with
        its opening bracket, on a copy of the cache); with ``tool_first``, ``finish`` is not a
        candidate at the first step."""
        best, best_score = None, float("-inf")
        names = self.tools.names
        if self.tool_first and self.acted == 1:
            names = [n for n in names if n != FINISH]
        for name in names:
            ids = self.tok.encode(f" {name}[")
            with torch.no_grad():
                logits, _ = self.model(torch.tensor([ids], dtype=torch.long), self._fork())
            logp = torch.log_softmax(torch.cat([self.logits[None], logits[0, :-1]]).double(), dim=-1)
            score = float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())
            if score > best_score:
                best, best_score = name, score
        return best
