"""Tools an agent may call, the text format of a call, and its parser.

An agent is a language model that writes, besides its thoughts, **actions** (动作): requests to run
a tool (工具).  The program reads each action, runs the tool, and writes what the tool returned
back into the prompt as an **observation** (观察).  The format here is ReAct's (Yao et al., 2023),
one action per line, the argument in square brackets::

    Action: calculator[37 * 48]
    Action: search[smoothing n-grams best]
    Action: finish[1776]

``finish`` is not a tool: it ends the run with its argument as the answer.

- :func:`parse_action` reads the first ``Action:`` line of what the model wrote; anything else is a
  :class:`ToolCallError` naming what is wrong.  The argument is everything between the first ``[``
  and the **first** ``]`` after it (a greedy match would swallow two actions on one line into one
  argument), and nothing but spaces may follow on the line.
- :class:`Tools` is the registry: each :class:`Tool` has a name, a one-line description the prompt
  shows, and a function from the argument (text) to the observation (text).  :meth:`Tools.observe`
  turns **every** failure (a call that does not parse, an unknown tool, a tool that raised an
  error) into an observation ``error: ...``: the loop never stops on an exception, and the model
  reads what went wrong and may try again.
- Two tools: :func:`calculator_tool` (:mod:`tinylm.agents.calculator`) and :func:`search_tool`,
  BM25 (:class:`tinylm.rag.retrieval.BM25`) over the frozen book cut into chunks of 128 words
  overlapping by 32; it returns a window of the best chunk around the query's words, with the
  chunk's citation, short enough for a small model's prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from .calculator import CalculatorError, calculate, format_number

FINISH = "finish"
"""The action that ends a run; its argument is the answer."""


class ToolCallError(ValueError):
    """An action that does not parse, or names no tool; the message says which."""


class ToolError(ValueError):
    """A tool that failed on its argument (the message becomes the observation)."""


@dataclass(frozen=True)
class Call:
    """A parsed action: the tool's name and its argument."""

    tool: str
    argument: str

    def __str__(self) -> str:
        return f"{self.tool}[{self.argument}]"


_ACTION_LINE = re.compile(r"Action:[ \t]*(.*)")
_CALL = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)[ \t]*\[([^\[\]\n]*)\][ \t]*$")


def parse_action(text: str) -> Call:
    """The call on the first ``Action:`` line of ``text``; :class:`ToolCallError` if there is
    none, or if that line is not exactly ``name[argument]`` (an argument has no brackets and no
    line breaks)."""
    if not isinstance(text, str):
        raise ToolCallError(f"an action is text, got {type(text).__name__}")
    m = _ACTION_LINE.search(text)
    if not m:
        raise ToolCallError("no 'Action:' line; write e.g. Action: calculator[12*7]")
    line = m.group(1).strip()
    call = _CALL.match(line)
    if not call:
        if "[" not in line:
            raise ToolCallError(f"the action {line!r} has no [argument]; write e.g. Action: search[topic]")
        if "]" not in line.split("[", 1)[1]:
            raise ToolCallError(f"the action {line!r} does not close its ]")
        raise ToolCallError(f"the action {line!r} is not one call name[argument]")
    return Call(call.group(1), call.group(2).strip())


@dataclass(frozen=True)
class Tool:
    """A tool: its name, what the prompt says it does, and the function that runs it."""

    name: str
    description: str
    function: Callable[[str], str]


class Tools:
    """The registry of the tools an agent may call (``finish`` is always allowed)."""

    def __init__(self, tools: Sequence[Tool]):
        self.tools = {}
        for tool in tools:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", tool.name) or tool.name == FINISH:
                raise ValueError(f"a tool's name is one word and not {FINISH!r}, got {tool.name!r}")
            if tool.name in self.tools:
                raise ValueError(f"two tools are called {tool.name!r}")
            self.tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        """The names an action may use: the tools, then ``finish``."""
        return [*self.tools, FINISH]

    def describe(self) -> str:
        """The lines of the prompt that list the tools."""
        lines = [f"{t.name}[...]: {t.description}" for t in self.tools.values()]
        return "\n".join(lines + [f"{FINISH}[answer]: give the final answer and stop"])

    def run(self, call: Call) -> str:
        """The tool's output for ``call``; :class:`ToolCallError` for an unknown tool,
        :class:`ToolError` for a tool that failed."""
        if call.tool not in self.tools:
            raise ToolCallError(f"unknown tool {call.tool!r}; the tools are {', '.join(self.names)}")
        if not call.argument:
            raise ToolError(f"{call.tool}[] has an empty argument")
        return self.tools[call.tool].function(call.argument)

    def observe(self, text: str) -> tuple[Call | None, str]:
        """Parse an action and run it: ``(call, observation)``.  Never raises: a call that does
        not parse gives ``(None, "error: ...")``, a failed or unknown tool ``(call, "error: ...")``.
        A ``finish`` call is returned with its answer as the observation (the loop stops on it)."""
        try:
            call = parse_action(text)
        except ToolCallError as exc:
            return None, f"error: {exc}"
        if call.tool == FINISH:
            return call, call.argument
        try:
            return call, self.run(call)
        except (ToolCallError, ToolError, CalculatorError) as exc:
            return call, f"error: {exc}"


# ----------------------------------------------------------------------------- the two tools

def calculator_tool() -> Tool:
    def run(expression: str) -> str:
        return format_number(calculate(expression))
    return Tool("calculator", "computes an arithmetic expression with + - * / // % ** and parentheses, "
                "e.g. calculator[12*7]", run)


WINDOW = 48
"""Words of a chunk a search shows."""


def best_start(text: str, query: str, size: int = WINDOW) -> int:
    """The first word of the ``size``-word window of ``text`` that holds the most of the query's
    words (BM25's tokens), the earliest on a tie."""
    from ..rag.retrieval import words as terms

    tokens = text.split()
    wanted = set(terms(query))
    hits = [bool(wanted & set(terms(t))) for t in tokens]
    best, best_count = 0, -1
    for start in range(0, max(len(tokens) - size, 0) + 1):
        count = sum(hits[start:start + size])
        if count > best_count:
            best, best_count = start, count
    return best


def best_window(text: str, query: str, size: int = WINDOW) -> str:
    """The window of :func:`best_start`; ``...`` marks where it was cut."""
    tokens = text.split()
    start = best_start(text, query, size)
    window = " ".join(tokens[start:start + size])
    return ("... " if start else "") + window + (" ..." if start + size < len(tokens) else "")


class BookSearch:
    """BM25 over chunks of the frozen book; ``planted`` maps a chunk's index to the text that
    replaces it (an attacker's edit of one page: :mod:`tinylm.agents.tasks`)."""

    def __init__(self, chunks=None, planted: dict[int, str] | None = None, size: int = 128, overlap: int = 32):
        from ..rag import corpus
        from ..rag.retrieval import BM25

        self.chunks = list(chunks) if chunks is not None else corpus.chunk(corpus.load_book(), size, overlap)
        self.planted = dict(planted or {})
        self.texts = [self.planted.get(i, c.text) for i, c in enumerate(self.chunks)]
        self.bm25 = BM25(self.texts)
        self.shown: list[int] = []          # the chunks shown so far (to tell which runs saw a planted one)

    def __call__(self, query: str) -> str:
        from ..rag.retrieval import words as terms

        if not terms(query):
            raise ToolError(f"the query {query!r} has no words to search for")
        i = self.bm25.rank(query, 1)[0]
        self.shown.append(i)
        return f"[{self.chunks[i].cite}] {best_window(self.texts[i], query)}"


def search_tool(search: BookSearch | None = None) -> Tool:
    return Tool("search", "searches the course book and returns a passage, e.g. search[perplexity]",
                search or BookSearch())


def default_tools(search: BookSearch | None = None) -> Tools:
    """The calculator and the search over the book."""
    return Tools([calculator_tool(), search_tool(search)])
