"""A safe calculator: arithmetic parsed with :mod:`ast`, never handed to ``eval``.

A tool an agent calls runs text that a language model wrote, and text in a prompt can come from
anyone (a retrieved page may carry instructions, see :mod:`tinylm.agents.tasks`).  So the
calculator must do arithmetic and **nothing else**, whatever it is given:

1. **Length.**  An expression longer than :data:`MAX_LENGTH` characters is refused before it is
   read (``'1' * 10**6`` characters, or thousands of nested parentheses, never reach the parser).
2. **Parse, do not run.**  ``ast.parse(text, mode="eval")`` turns the text into a tree without
   running anything.  Python's ``eval`` would run any expression: ``__import__('os').system(...)``
   is an expression.
3. **Allow-list the tree.**  Only the nodes of :data:`ALLOWED_NODES` may appear: numbers
   (``int`` and ``float``; not ``bool``, not ``complex``, not strings), the binary operators
   ``+ - * / // % **``, unary ``-`` and ``+``, and calls of the few named functions of
   :data:`FUNCTIONS` by their bare name.  A name, an attribute (``x.y``), a subscript, a lambda, a
   comparison, a string: each is refused, naming what was found.  An allow-list (what may appear)
   is safe by default; a deny-list (what may not) is unsafe the day someone finds a node it forgot.
4. **Limit the size of every result.**  ``9**9**9`` is a short expression whose value has 370
   million digits: computing it would take minutes and gigabytes.  Before a power is computed,
   its number of digits is estimated (``exponent * log10(|base|)``) and the power is refused when
   that exceeds :data:`MAX_DIGITS`; every other integer result is checked after the operation
   (multiplying two numbers of at most ``MAX_DIGITS`` digits is cheap).  A float that overflows, or
   a result that is not a real number (``(-8) ** 0.5``), is refused too.
5. **Errors are messages.**  Every refusal and every arithmetic error (division by zero, the
   square root of a negative number) raises :class:`CalculatorError` with a sentence a reader (and
   an agent, which reads it as its observation) can act on.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_LENGTH = 200
"""The longest expression read, in characters."""

MAX_DIGITS = 300
"""The most decimal digits an integer result may have (a float is bounded by its type)."""

MAX_NODES = 500
"""The most nodes the expression's tree may have."""


class CalculatorError(ValueError):
    """An expression the calculator refuses, or an arithmetic error; the message says which."""


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def _sqrt(x):
    if x < 0:
        raise CalculatorError(f"sqrt of a negative number ({x}) is not a real number")
    return math.sqrt(x)


def _round(x, digits=0):
    if not isinstance(digits, int) or not -20 <= digits <= 20:
        raise CalculatorError("round(x, n) takes a whole number of digits n between -20 and 20")
    return round(x, digits) if digits else round(x)


FUNCTIONS = {"sqrt": (_sqrt, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2)}
"""The functions an expression may call by name: name -> (function, fewest and most arguments)."""

ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Call, ast.Name, ast.Load,
                 *BINARY, *UNARY)
"""The node types an expression's tree may hold.  ``ast.Name`` and ``ast.Call`` are allowed only as
``f(...)`` with ``f`` in :data:`FUNCTIONS` (:func:`check`), never a bare name."""

_WORDS = {ast.Attribute: "an attribute (x.y)", ast.Subscript: "a subscript (x[i])", ast.Lambda: "a lambda",
          ast.Compare: "a comparison", ast.BoolOp: "and/or", ast.IfExp: "an if-expression",
          ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
          ast.JoinedStr: "an f-string", ast.BitXor: "^ (write powers as **)", ast.BitAnd: "&",
          ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~", ast.Not: "not",
          ast.MatMult: "@", ast.Starred: "*args", ast.keyword: "a keyword argument"}


def _describe(node: ast.AST) -> str:
    for kind, words in _WORDS.items():
        if isinstance(node, kind):
            return words
    return type(node).__name__


def check(tree: ast.AST) -> None:
    """Refuse any tree that is not arithmetic (see the module docstring, step 3)."""
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise CalculatorError(f"the expression is too long ({len(nodes)} parts; at most {MAX_NODES})")
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    for node in nodes:
        if not isinstance(node, ALLOWED_NODES):
            raise CalculatorError(f"not arithmetic: {_describe(node)} is not allowed")
        if isinstance(node, ast.Constant) and (type(node.value) not in (int, float)):
            raise CalculatorError(f"not a number: {node.value!r}; only numbers are allowed")
        if isinstance(node, ast.Name) and (id(node) not in called or node.id not in FUNCTIONS):
            raise CalculatorError(f"unknown name {node.id!r}; the functions are {', '.join(FUNCTIONS)}")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise CalculatorError(f"only {', '.join(FUNCTIONS)} may be called, by name")
            if node.keywords:
                raise CalculatorError(f"{node.func.id}() takes no keyword arguments")
            _, fewest, most = FUNCTIONS[node.func.id]
            if not fewest <= len(node.args) <= most:
                raise CalculatorError(f"{node.func.id}() takes {fewest if fewest == most else f'{fewest} or {most}'} "
                                      f"argument{'s' if most > 1 else ''}, got {len(node.args)}")


def _checked(value):
    if isinstance(value, complex):
        raise CalculatorError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is too large (or not a number)")
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.3:
        if len(str(abs(value))) > MAX_DIGITS:
            raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
    return value


def _power(base, exponent):
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero (0 to a negative power)")
    if abs(base) > 1 and abs(exponent) > 1:
        digits = abs(exponent) * math.log10(abs(base))
        if digits > MAX_DIGITS:                   # 9**387420489 is refused here, before it is computed
            raise CalculatorError(f"the power {base}**{exponent} is too large (about {digits:.3g} digits; "
                                  f"at most {MAX_DIGITS})")
    try:
        return base ** exponent
    except OverflowError:
        raise CalculatorError(f"the power {base}**{exponent} is too large") from None


def _evaluate(node: ast.AST):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return _checked(UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        try:
            return _checked(BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError(f"division by zero ({left} {SYMBOL[type(node.op)]} {right})") from None
        except OverflowError:
            raise CalculatorError("the result is too large for a floating-point number") from None
    if isinstance(node, ast.Call):
        function = FUNCTIONS[node.func.id][0]
        try:
            return _checked(function(*[_evaluate(a) for a in node.args]))
        except OverflowError:
            raise CalculatorError(f"{node.func.id}() overflowed") from None
    raise CalculatorError(f"not arithmetic: {_describe(node)}")         # check() lets nothing else through


def calculate(expression: str) -> int | float:
    """The value of an arithmetic ``expression``; :class:`CalculatorError` if it is refused or fails.

    >>> calculate("12 * (3 + 4)")
    84
    >>> calculate("9**9**9")
    Traceback (most recent call last):
    ...
    tinylm.agents.calculator.CalculatorError: the power 9**387420489 is too large (about 3.7e+08 digits; at most 300)
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"an expression is text, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"the expression is too long ({len(expression)} characters; at most {MAX_LENGTH})")
    text = expression.replace("×", "*").replace("÷", "/").replace("−", "-").strip()
    if not text:
        raise CalculatorError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression ({exc.msg}): {expression!r}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("the expression is nested too deeply") from None
    check(tree)
    try:
        return _evaluate(tree)
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None


def format_number(value: int | float) -> str:
    """A result as an agent reads it: integers exactly, floats to 10 significant digits (a float
    that is a whole number and not huge is written without ``.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)
