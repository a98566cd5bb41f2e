"""Which names a check reads from the submission, found by reading the lab's code.

An exercise is an answer cell, the lab's cells after it, and its check cells among them.  The
answer process (:mod:`tinylm_course.isolation`) runs the submission's answer and those cells;
at each check it must send the kernel the values the check will read:

- the check **reads** every name it loads without having assigned it first;
- of these, it takes from the answer process those **mentioned** in the answer cell or in the
  cells between the answer and the check (they may hold what the answer made, or data the
  answer's run changed); the others (``np``, a model built before the exercise) are the kernel's.

A name is **tainted** when the answer cell assigns it, or when a statement of the cells after it
assigns it while reading a tainted name (or calls a method of it with a tainted argument): its
value was made by the submission.  A tainted value must reach the check as plain data, or as a function the kernel can
call remotely; the kernel never uses its own value of a tainted name in a check.

This reading cannot follow aliases (a function of the submission changing a model through one of
its layers), so it is not what makes a check sound: a check reads the answer's work as data, and
``--verify`` tries a wrong answer of every exercise to show that the checks catch it.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field

from .exercises import Exercise

BUILTINS = frozenset(dir(builtins))


def _transform(source: str) -> str:
    """IPython's syntax (magics, ``!`` lines) as plain Python, as the kernel runs it."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def parse(source: str) -> ast.Module:
    return ast.parse(_transform(source))


def stores_and_loads(node: ast.AST, tainted: frozenset | set | None = None) -> tuple[set[str], set[str]]:
    """The names ``node`` assigns (or defines, imports, deletes, changes by ``x[i] = ...`` or
    ``x.a = ...``) and those it reads.  ``obj.method(...)`` counts as a change to ``obj`` when its
    arguments read a name in ``tainted`` (with ``tainted=None``, always): a method given the
    submission's work may store it."""
    stores, loads = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stores.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            stores |= {(alias.asname or alias.name).split(".")[0] for alias in n.names}
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
            arguments = {a.id for arg in [*n.args, *n.keywords] for a in ast.walk(arg) if isinstance(a, ast.Name)}
            if tainted is None or arguments & tainted:
                stores.add(n.func.value.id)
        elif isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            base = n.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                stores.add(base.id)
    return stores, loads


def check_reads(source: str) -> set[str]:
    """The names a check cell reads that it does not assign itself (nor are builtins)."""
    tree = parse(source)
    stores, loads = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, ast.arg):
            stores.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stores.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            stores |= {(alias.asname or alias.name).split(".")[0] for alias in n.names}
    return (loads - stores) - BUILTINS


@dataclass
class Flow:
    """An exercise's steps for the answer process and what its checks read."""

    steps: list = field(default_factory=list)   # ("cell", source, code cell number) or ("check", cell index, names)
    tainted: set[str] = field(default_factory=set)
    reads: dict[int, list[str]] = field(default_factory=dict)   # check cell index -> names sent


def exercise_flow(cells, exercise: Exercise) -> Flow:
    """The steps after the answer (the lab's code cells up to the last check) and, for each check,
    the names the answer process sends."""
    flow = Flow()
    number = {index: n for n, index in enumerate(
        (index for index, cell in enumerate(cells) if cell.cell_type == "code"), start=1)}
    stored, loaded = stores_and_loads(parse(cells[exercise.answer_cell].source))
    flow.tainted = set(stored)
    mentioned = stored | loaded
    for index in range(exercise.answer_cell + 1, max(exercise.check_cells) + 1):
        cell = cells[index]
        if cell.cell_type != "code":
            continue
        if index in exercise.check_cells:
            names = sorted(check_reads(cell.source) & mentioned)
            flow.reads[index] = names
            flow.steps.append(("check", index, names))
            continue
        for statement in parse(cell.source).body:
            stores, loads = stores_and_loads(statement, flow.tainted)
            mentioned |= stores | loads
            if loads & flow.tainted:
                flow.tainted |= stores
        flow.steps.append(("cell", cell.source, number[index]))
    return flow
