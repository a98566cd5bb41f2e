"""The autograd engine: every gradient against torch.autograd (float64) and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.autograd import SGD, Adam, Tensor, cross_entropy, numerical_grad, unbroadcast

TOL = 1e-6          # the agreement the course asks for; float64 usually gives ~1e-12


def rand(rng, *shape, positive=False):
    x = rng.standard_normal(shape)
    return np.abs(x) + 0.5 if positive else x


# Each case: a function written once for both engines (they share the operator syntax),
# and the shapes of its inputs.  Inputs are (shape, positive?) pairs.
CASES = {
    "add": (lambda a, b: a + b, [(3, 4), (3, 4)]),
    "add bias (broadcast)": (lambda a, b: a + b, [(5, 4), (4,)]),
    "add column (broadcast)": (lambda a, b: a + b, [(5, 4), (5, 1)]),
    "add scalar": (lambda a: 2.5 + a, [(3, 2)]),
    "sub": (lambda a, b: a - b, [(3, 4), (4,)]),
    "rsub": (lambda a: 1.0 - a, [(3,)]),
    "neg": (lambda a: -a, [(2, 3)]),
    "mul": (lambda a, b: a * b, [(3, 4), (3, 4)]),
    "mul broadcast": (lambda a, b: a * b, [(2, 3, 4), (3, 1)]),
    "div": (lambda a, b: a / b, [(3, 4), ((3, 4), True)]),
    "rdiv": (lambda a: 2.0 / a, [((3,), True)]),
    "pow": (lambda a: a ** 3, [(4, 2)]),
    "sqrt via pow": (lambda a: a ** 0.5, [((5,), True)]),
    "matmul": (lambda a, b: a @ b, [(5, 3), (3, 4)]),
    "batched matmul": (lambda a, b: a @ b, [(2, 5, 3), (3, 4)]),
    "sum": (lambda a: a.sum(), [(3, 4)]),
    "sum axis 0": (lambda a: a.sum(axis=0), [(3, 4)]),
    "sum axis 1 keepdims": (lambda a: a.sum(axis=1, keepdims=True), [(3, 4)]),
    "sum two axes": (lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)]),
    "mean": (lambda a: a.mean(), [(3, 4)]),
    "mean axis -1": (lambda a: a.mean(axis=-1), [(3, 4)]),
    "reshape": (lambda a: a.reshape(6, 2), [(3, 4)]),
    "tanh": (lambda a: a.tanh(), [(3, 4)]),
    "relu": (lambda a: a.relu(), [(3, 4)]),
    "exp": (lambda a: a.exp(), [(3, 4)]),
    "log": (lambda a: a.log(), [((3, 4), True)]),
    "rows (embedding lookup, repeats)": (lambda a: a[np.array([2, 0, 2, 2, 1])], [(4, 3)]),
    "slice": (lambda a: a[1:, :2], [(3, 4)]),
    "two-layer MLP": (lambda x, w1, b1, w2, b2: ((x @ w1 + b1).tanh() @ w2 + b2).relu(),
                      [(6, 4), (4, 5), (5,), (5, 3), (3,)]),
    "used twice": (lambda a, b: a * b + a.exp() * a, [(3, 3), (3, 3)]),
    "log-softmax by hand": (lambda z: z - z.exp().sum(axis=1, keepdims=True).log(), [(4, 5)]),
}


def make_inputs(spec, seed):
    rng = np.random.default_rng(seed)
    out = []
    for item in spec:
        shape, positive = (item, False) if isinstance(item[0], int) else item
        out.append(rand(rng, *shape, positive=positive))
    return out


def ours(fn, arrays, upstream):
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    out.backward(upstream)
    return out.data, [x.grad for x in xs]


def theirs(fn, arrays, upstream):
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*xs)
    out.backward(torch.tensor(upstream, dtype=torch.float64))
    return out.detach().numpy(), [x.grad.numpy() for x in xs]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_torch(name, seed):
    fn, spec = CASES[name]
    arrays = make_inputs(spec, seed)
    shape = fn(*[Tensor(a) for a in arrays]).shape
    upstream = np.random.default_rng(100 + seed).standard_normal(shape)
    value, grads = ours(fn, arrays, upstream)
    t_value, t_grads = theirs(fn, arrays, upstream)
    np.testing.assert_allclose(value, t_value, atol=TOL, rtol=0)
    for g, tg in zip(grads, t_grads):
        assert g.shape == tg.shape
        np.testing.assert_allclose(g, tg, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_finite_differences(name):
    fn, spec = CASES[name]
    arrays = make_inputs(spec, seed=7)
    shape = fn(*[Tensor(a) for a in arrays]).shape
    upstream = np.random.default_rng(8).standard_normal(shape)
    _, grads = ours(fn, arrays, upstream)
    for i in range(len(arrays)):
        def scalar(x, i=i):                   # ⟨upstream, f(...)⟩ as a function of input i alone
            args = [Tensor(x if j == i else a) for j, a in enumerate(arrays)]
            return float(np.sum(upstream * fn(*args).data))
        np.testing.assert_allclose(grads[i], numerical_grad(scalar, arrays[i]), atol=TOL, rtol=0)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), lead=st.integers(0, 2),
       keep=st.lists(st.booleans(), min_size=2, max_size=2))
def test_broadcast_gradients_have_the_operands_shape(rows, cols, lead, keep):
    """a (lead…, rows, cols) + b with b's shape any broadcastable reduction of a's."""
    big = (2,) * lead + (rows, cols)
    small = tuple(n if k else 1 for n, k in zip((rows, cols), keep))
    rng = np.random.default_rng(rows * 10 + cols)
    a, b = rng.standard_normal(big), rng.standard_normal(small)
    upstream = rng.standard_normal(big)
    _, (ga, gb) = ours(lambda x, y: x * y + y, [a, b], upstream)
    _, (ta, tb) = theirs(lambda x, y: x * y + y, [a, b], upstream)
    assert gb.shape == small
    np.testing.assert_allclose(ga, ta, atol=TOL, rtol=0)
    np.testing.assert_allclose(gb, tb, atol=TOL, rtol=0)


def test_unbroadcast_sums_the_copies():
    assert unbroadcast(np.ones((2, 5, 3)), (1, 3)).tolist() == [[10.0, 10.0, 10.0]]
    assert unbroadcast(np.ones((2, 3)), ()).shape == ()


def test_a_tensor_used_twice_gets_both_contributions():
    x = Tensor([3.0], requires_grad=True)
    (x * x + x).sum().backward()           # d(x² + x)/dx = 2x + 1
    assert x.grad.tolist() == [7.0]
    w = Tensor(np.eye(2), requires_grad=True)
    h = w @ w                               # w feeds both sides of one product
    h.sum().backward()
    expected = torch.eye(2, dtype=torch.float64, requires_grad=True)
    (expected @ expected).sum().backward()
    np.testing.assert_allclose(w.grad, expected.grad.numpy(), atol=TOL)


def test_leaf_gradients_accumulate_across_backward_calls_like_torch():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2, 2))
    x, w = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    tw = torch.tensor(b, requires_grad=True)
    loss, tloss = (x @ w).tanh().sum(), (tx @ tw).tanh().sum()
    for _ in range(2):                      # the second call adds the same gradient again
        loss.backward()
        tloss.backward(retain_graph=True)
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), atol=TOL)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), atol=TOL)


def test_constants_get_no_gradient():
    x = Tensor(np.ones((2, 3)))             # data, not a parameter
    w = Tensor(np.ones((3, 1)), requires_grad=True)
    y = (x @ w).sum()
    y.backward()
    assert x.grad is None and w.grad.tolist() == [[2.0], [2.0], [2.0]]
    with pytest.raises(RuntimeError, match="requires_grad"):
        (x * 2).sum().backward()
    with pytest.raises(RuntimeError, match="scalar"):
        (w * 2).backward()


def test_parameters_own_their_values():
    values = np.zeros(3)
    p = Tensor(values, requires_grad=True)
    p.grad = np.ones(3)
    SGD([p], lr=1.0).step()
    assert values.tolist() == [0.0, 0.0, 0.0] and p.data.tolist() == [-1.0, -1.0, -1.0]


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    assert x.grad[0] == pytest.approx(1.0001 ** 5000)


# cross-entropy --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_cross_entropy_matches_torch(seed):
    rng = np.random.default_rng(seed)
    logits, targets = 3 * rng.standard_normal((16, 7)), rng.integers(0, 7, size=16)
    z = Tensor(logits, requires_grad=True)
    loss = cross_entropy(z, targets)
    loss.backward()
    tz = torch.tensor(logits, requires_grad=True)
    tloss = F.cross_entropy(tz, torch.tensor(targets))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), abs=1e-12)
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(z.grad, numerical_grad(lambda a: cross_entropy(Tensor(a), targets).item(), logits),
                               atol=TOL)


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    logits, targets = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), np.array([2, 0])
    z = Tensor(logits, requires_grad=True)
    cross_entropy(z, targets).backward()
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad, (p - np.eye(3)[targets]) / 2, atol=1e-15)


def test_cross_entropy_is_stable_for_huge_logits():
    z = Tensor(np.array([[1000.0, 0.0, -1000.0]]), requires_grad=True)
    loss = cross_entropy(z, [1])
    loss.backward()
    assert loss.item() == pytest.approx(1000.0) and np.isfinite(z.grad).all()


def test_cross_entropy_inside_a_graph():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((5, 5))
    prev, nxt = rng.integers(0, 5, 30), rng.integers(0, 5, 30)
    w = Tensor(table, requires_grad=True)
    (cross_entropy(w[prev], nxt) * 2.0).backward()
    tw = torch.tensor(table, requires_grad=True)
    (F.cross_entropy(tw[torch.tensor(prev)], torch.tensor(nxt)) * 2.0).backward()
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="logits"):
        cross_entropy(w, nxt[:4])


# optimizers -----------------------------------------------------------------------------

def _train(make_ours, make_torch, steps=6):
    """Run both optimizers on the same small regression problem; return both parameter lists."""
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    w0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(2)
    w, b = Tensor(w0, requires_grad=True), Tensor(b0, requires_grad=True)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    opt, topt = make_ours([w, b]), make_torch([tw, tb])
    tx, ty = torch.tensor(x), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        ((Tensor(x) @ w + b - y) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((tx @ tw + tb - ty) ** 2).mean().backward()
        topt.step()
    return [w.data, b.data], [tw.detach().numpy(), tb.detach().numpy()]


@pytest.mark.parametrize("hyper", [dict(lr=1e-3), dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6)])
def test_adam_steps_match_torch(hyper):
    mine, reference = _train(lambda ps: Adam(ps, **hyper), lambda ps: torch.optim.Adam(ps, **hyper))
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_match_torch(momentum):
    mine, reference = _train(lambda ps: SGD(ps, lr=0.05, momentum=momentum),
                             lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum))
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)


def test_adam_first_step_is_lr_times_sign_of_gradient():
    p = Tensor(np.zeros(3), requires_grad=True)
    p.grad = np.array([1e-4, -3.0, 200.0])
    Adam([p], lr=0.01, eps=0.0).step()
    np.testing.assert_allclose(p.data, [-0.01, 0.01, -0.01])


def test_zero_grad_and_parameters_without_gradients():
    p, q = Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    opt = Adam([p, q], lr=0.5)
    (p * 3.0).sum().backward()
    opt.step()                                # q has no gradient: it must not move
    assert q.data.tolist() == [2.0] and p.data[0] == pytest.approx(0.5)
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="requires_grad"):
        SGD([Tensor([1.0])], lr=0.1)


def test_gradient_descent_fits_a_line():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (64, 1))
    y = 2.0 * x - 0.5
    w, b = Tensor(np.zeros((1, 1)), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    opt = SGD([w, b], lr=0.3, momentum=0.5)
    for _ in range(300):
        opt.zero_grad()
        ((Tensor(x) @ w + b - y) ** 2).mean().backward()
        opt.step()
    assert w.data[0, 0] == pytest.approx(2.0, abs=1e-6) and b.data[0] == pytest.approx(-0.5, abs=1e-6)


def test_repr_is_short_and_address_free():
    text = repr(Tensor(np.arange(3.0), requires_grad=True) * 2)
    assert text.startswith("Tensor([0., 2., 4.]") and "requires_grad=True" in text and "0x" not in text
