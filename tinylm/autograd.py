r"""A small reverse-mode automatic differentiation engine on numpy arrays.

This is backpropagation written out in full, small enough to read in one sitting.  It does
what ``torch.autograd`` does for the operations a small neural language model needs, and the
unit tests check every gradient against torch and against finite differences.

The idea
    Every :class:`Tensor` remembers the operation that made it and the tensors it was made
    from (its *parents*).  A computation therefore leaves behind a graph, the
    **computational graph** (计算图).  ``loss.backward()`` walks that graph from the loss back
    to the inputs, in reverse topological order, and applies the **chain rule** at every
    node: if ``out = f(a, b)`` and we already know ``g = ∂loss/∂out``, then

        ∂loss/∂a = g · ∂out/∂a        ∂loss/∂b = g · ∂out/∂b

    Each operation below carries this local rule, its *backward rule*, in a closure.  A
    tensor used in several places receives one contribution from each use, and the
    contributions are **added** (the multivariate chain rule), which is why gradients
    accumulate with ``+=``.

Shapes and broadcasting
    numpy broadcasts: adding a bias ``b`` of shape (H,) to ``x`` of shape (N, H) uses ``b``
    once per row.  Each use contributes to ``b``'s gradient, so the backward pass sums the
    incoming gradient over the broadcast axes until it has ``b``'s shape again
    (:func:`unbroadcast`).

What is differentiated
    Only tensors created with ``requires_grad=True`` (the parameters) and tensors computed
    from them get a ``.grad``.  Inputs such as a batch of data are plain arrays or tensors
    without gradients, so no work is spent on them.  Like torch, the gradients of leaf
    tensors accumulate across calls of ``backward()``; an optimizer's ``zero_grad()`` clears
    them.  Everything is float64, so results agree with torch (in float64) to about 1e-12.

>>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> y = (x * x).sum()          # y = Σ x²
>>> y.backward()
>>> x.grad                     # ∂y/∂x = 2x
array([2., 4., 6.])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["Tensor", "unbroadcast", "cross_entropy", "numerical_grad", "SGD", "Adam"]


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``.

    A value used k times receives the sum of k gradients: broadcasting is a use per row.

    >>> unbroadcast(np.ones((4, 3)), (3,)).tolist()        # a bias used by 4 rows
    [4.0, 4.0, 4.0]
    >>> unbroadcast(np.ones((4, 3)), (4, 1)).tolist()      # a column used by 3 columns
    [[3.0], [3.0], [3.0], [3.0]]
    """
    while grad.ndim > len(shape):                   # leading axes that broadcasting added
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):             # axes of size 1 that it stretched
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _as_array(value) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, Tensor) else value, dtype=np.float64)


class Tensor:
    """A float64 numpy array that records how it was computed, so it can be differentiated.

    ``data``           the values (a numpy array of float64)
    ``grad``           ∂loss/∂self after ``loss.backward()``, same shape as ``data``, or None
    ``requires_grad``  whether gradients flow to this tensor
    """

    def __init__(self, data, requires_grad: bool = False, _parents: tuple["Tensor", ...] = (), _op: str = ""):
        self.data = _as_array(data)
        if requires_grad and not _parents:
            self.data = self.data.copy()     # a parameter owns its values: optimizers change them in place
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents = _parents
        self._op = _op
        self._backward: Callable[[np.ndarray], None] = lambda g: None

    # ------------------------------------------------------------------ bookkeeping

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def item(self) -> float:
        return float(self.data.item())

    def numpy(self) -> np.ndarray:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        values = np.array2string(self.data, precision=4, separator=", ", threshold=20)
        flag = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op!r}" if self._op else ""
        return f"Tensor({values}{flag}{op})"

    @staticmethod
    def _lift(value) -> "Tensor":
        """Numbers and arrays become constant tensors, so ``x * 2`` and ``2 * x`` both work."""
        return value if isinstance(value, Tensor) else Tensor(value)

    def _result(self, data: np.ndarray, parents: tuple["Tensor", ...], op: str,
                backward: Callable[[np.ndarray], None]) -> "Tensor":
        """A new tensor made from ``parents`` by ``op``; ``backward(g)`` sends g on to them."""
        needs = any(p.requires_grad for p in parents)
        out = Tensor(data, requires_grad=needs, _parents=parents if needs else (), _op=op)
        if needs:
            out._backward = backward
        return out

    def _accumulate(self, grad: np.ndarray) -> None:
        """Add one contribution to ∂loss/∂self, summed back to this tensor's shape."""
        if not self.requires_grad:
            return
        grad = unbroadcast(np.asarray(grad, dtype=np.float64), self.shape)
        if self.grad is None:
            self.grad = grad.copy()
        else:
            self.grad = self.grad + grad

    # ------------------------------------------------------------------ elementwise arithmetic

    def __add__(self, other) -> "Tensor":
        other = Tensor._lift(other)

        def backward(g):                     # out = a + b:  ∂out/∂a = ∂out/∂b = 1
            self._accumulate(g)
            other._accumulate(g)
        return self._result(self.data + other.data, (self, other), "+", backward)

    def __mul__(self, other) -> "Tensor":
        other = Tensor._lift(other)

        def backward(g):                     # out = a · b:  ∂out/∂a = b,  ∂out/∂b = a
            self._accumulate(g * other.data)
            other._accumulate(g * self.data)
        return self._result(self.data * other.data, (self, other), "*", backward)

    def __neg__(self) -> "Tensor":
        return self * -1.0

    def __sub__(self, other) -> "Tensor":
        return self + (-Tensor._lift(other))

    def __rsub__(self, other) -> "Tensor":
        return Tensor._lift(other) + (-self)

    def __truediv__(self, other) -> "Tensor":
        other = Tensor._lift(other)

        def backward(g):                     # out = a / b:  ∂out/∂a = 1/b,  ∂out/∂b = -a/b²
            self._accumulate(g / other.data)
            other._accumulate(-g * self.data / other.data ** 2)
        return self._result(self.data / other.data, (self, other), "/", backward)

    def __rtruediv__(self, other) -> "Tensor":
        return Tensor._lift(other) / self

    def __pow__(self, exponent: float) -> "Tensor":
        if isinstance(exponent, Tensor):
            raise TypeError("only a constant exponent is supported: x ** 2, not x ** y")
        p = float(exponent)

        def backward(g):                     # out = aᵖ:  ∂out/∂a = p aᵖ⁻¹
            self._accumulate(g * p * self.data ** (p - 1))
        return self._result(self.data ** p, (self,), f"**{p:g}", backward)

    __radd__ = __add__
    __rmul__ = __mul__

    # ------------------------------------------------------------------ matrix product

    def __matmul__(self, other) -> "Tensor":
        """Matrix product of (..., n, k) and (..., k, m) arrays (2-D or batched)."""
        other = Tensor._lift(other)
        if self.ndim < 2 or other.ndim < 2:
            raise ValueError(f"@ needs arrays of at least 2 dimensions, got shapes {self.shape} and {other.shape}")

        def backward(g):                     # C = A B:  ∂L/∂A = ∂L/∂C Bᵀ,  ∂L/∂B = Aᵀ ∂L/∂C
            self._accumulate(g @ np.swapaxes(other.data, -1, -2))
            other._accumulate(np.swapaxes(self.data, -1, -2) @ g)
        return self._result(self.data @ other.data, (self, other), "@", backward)

    def __rmatmul__(self, other) -> "Tensor":
        return Tensor._lift(other) @ self

    # ------------------------------------------------------------------ reductions and shapes

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        def backward(g):                     # every summed element gets the sum's gradient
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            self._accumulate(np.broadcast_to(g, self.shape))
        return self._result(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum", backward)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        count = self.data.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    def reshape(self, *shape) -> "Tensor":
        def backward(g):                     # reshaping moves values, so it moves gradients back
            self._accumulate(g.reshape(self.shape))
        return self._result(self.data.reshape(*shape), (self,), "reshape", backward)

    def __getitem__(self, index) -> "Tensor":
        """Indexing, e.g. ``W[ids]``: the rows of an embedding table for a batch of token ids."""
        index = index.data.astype(np.int64) if isinstance(index, Tensor) else index

        def backward(g):                     # each picked entry gets its gradient; a row picked twice gets two
            full = np.zeros_like(self.data)
            np.add.at(full, index, g)
            self._accumulate(full)
        return self._result(self.data[index], (self,), "[]", backward)

    # ------------------------------------------------------------------ elementwise functions

    def tanh(self) -> "Tensor":
        y = np.tanh(self.data)

        def backward(g):                     # d tanh(x)/dx = 1 - tanh(x)²
            self._accumulate(g * (1.0 - y ** 2))
        return self._result(y, (self,), "tanh", backward)

    def relu(self) -> "Tensor":
        def backward(g):                     # d max(x, 0)/dx = 1 where x > 0, else 0
            self._accumulate(g * (self.data > 0))
        return self._result(np.maximum(self.data, 0.0), (self,), "relu", backward)

    def exp(self) -> "Tensor":
        y = np.exp(self.data)

        def backward(g):                     # d eˣ/dx = eˣ
            self._accumulate(g * y)
        return self._result(y, (self,), "exp", backward)

    def log(self) -> "Tensor":
        def backward(g):                     # d ln x/dx = 1/x
            self._accumulate(g / self.data)
        return self._result(np.log(self.data), (self,), "log", backward)

    # ------------------------------------------------------------------ backpropagation

    def backward(self, grad=None) -> None:
        """Compute ∂self/∂t for every tensor t this one was computed from.

        ``grad`` is the gradient flowing in from above; it defaults to 1, which is right
        when ``self`` is a scalar loss.  Leaf tensors (the parameters) accumulate into
        ``.grad``; the gradients of intermediate results are recomputed at every call.
        """
        if not self.requires_grad:
            raise RuntimeError("this tensor does not depend on any tensor with requires_grad=True")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar, not shape {self.shape}")
            grad = np.ones_like(self.data)
        order = self._topological_order()
        for node in order:
            if node._parents:                # intermediate results start from zero each time
                node.grad = None
        self._accumulate(np.broadcast_to(_as_array(grad), self.shape))
        for node in reversed(order):         # outputs before the inputs they were made from
            if node._parents and node.grad is not None:
                node._backward(node.grad)

    def _topological_order(self) -> list["Tensor"]:
        """Every tensor of the graph, each one after all of its parents (iterative DFS)."""
        order, seen = [], set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in node._parents if id(p) not in seen)
        return order


# ---------------------------------------------------------------------- the loss

def cross_entropy(logits: Tensor, targets) -> Tensor:
    r"""Mean negative log-likelihood of ``targets`` under ``softmax(logits)``, in nats.

    ``logits`` has shape (N, V): one row of scores per example; ``targets`` holds N class
    ids.  For one row z with target y,

        loss = -log softmax(z)_y = logsumexp(z) - z_y,

    computed after subtracting max(z) from the row (it changes nothing mathematically and
    keeps ``exp`` from overflowing).  The backward rule is the famous one:

        ∂loss/∂z = softmax(z) - onehot(y),    divided by N for the mean over the batch.

    Dividing by ln 2 turns nats into bits: on characters, ``loss / ln 2`` is bits per character.
    """
    logits = Tensor._lift(logits)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets).astype(np.int64)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"expected logits (N, V) and N targets, got {logits.shape} and {targets.shape}")
    n = len(targets)
    z = logits.data - logits.data.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_probs = z - log_norm
    rows = np.arange(n)
    loss = -log_probs[rows, targets].mean()

    def backward(g):                          # (softmax − one-hot) / N, times the incoming gradient
        d = np.exp(log_probs)
        d[rows, targets] -= 1.0
        logits._accumulate(g * d / n)
    return logits._result(np.asarray(loss), (logits,), "cross_entropy", backward)


# ---------------------------------------------------------------------- gradient checking

def numerical_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    r"""∂f/∂x by central differences: (f(x + ε eᵢ) − f(x − ε eᵢ)) / 2ε for every entry i.

    The error is O(ε²) plus rounding of order (machine ε)/ε, about 1e-9 in float64 with
    ε = 1e-6: slow (two calls of f per entry) but independent of any backward rule, which
    makes it the referee for gradient code.
    """
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = float(f(x))
        flat[i] = saved - eps
        down = float(f(x))
        flat[i] = saved
        gflat[i] = (up - down) / (2 * eps)
    return grad


# ---------------------------------------------------------------------- optimizers

class Optimizer:
    """Holds a list of parameters; ``step()`` moves them using their ``.grad``."""

    def __init__(self, params: Iterable[Tensor]):
        self.params = list(params)
        if not all(isinstance(p, Tensor) and p.requires_grad for p in self.params):
            raise ValueError("optimizers take Tensors created with requires_grad=True")

    def zero_grad(self) -> None:
        """Forget the gradients of the last step (they would otherwise accumulate)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    r"""(Stochastic) gradient descent, with optional heavy-ball momentum (Polyak, 1964).

        v ← μ v + g,    θ ← θ − η v        (μ = 0: plain θ ← θ − η g)

    The same update as ``torch.optim.SGD(params, lr=η, momentum=μ)``.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0):
        super().__init__(params)
        self.lr, self.momentum = lr, momentum
        self.velocity = [np.zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        for p, v in zip(self.params, self.velocity):
            if p.grad is None:
                continue
            v *= self.momentum
            v += p.grad
            p.data -= self.lr * v


class Adam(Optimizer):
    r"""Adam (Kingma and Ba, 2015): momentum plus a per-parameter step size.

        m ← β₁ m + (1 − β₁) g               a running mean of the gradient
        v ← β₂ v + (1 − β₂) g²              a running mean of its square
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)   bias correction (m and v start at 0)
        θ ← θ − η m̂ / (√v̂ + ε)

    Dividing by √v̂ makes the step about η in every coordinate, whatever the gradient's
    scale.  The same update as ``torch.optim.Adam(params, lr=η, betas=(β₁, β₂), eps=ε)``.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            p.data -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
