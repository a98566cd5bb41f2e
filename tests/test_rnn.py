"""Gradients through time of the recurrent language models (tinylm.models.rnn)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm.models.rnn import RecurrentConfig, RecurrentLM, gradient_norms_through_time

IDS = np.random.default_rng(0).integers(0, 11, size=(3, 26))       # 3 rows: read 25 tokens, predict the 26th


def model(cell, layers=1, seed=0):
    torch.manual_seed(seed)
    return RecurrentLM(RecurrentConfig(vocab_size=11, cell=cell, d_embed=5, d_state=6, n_layers=layers)).double()


def norms_by_restarting(m, ids, max_lag):
    """Independent reference: for each lag, restart the model from the stored state s_{n-k} as a
    leaf tensor, read the remaining tokens, and differentiate the loss with respect to that leaf."""
    ids = torch.as_tensor(ids)
    n = ids.shape[1] - 1
    with torch.no_grad():
        states, state = [], None
        for t in range(n):
            _, state = m.rnn(m.embed(ids[:, t:t + 1]), state)
            states.append(state)
    out = np.zeros((ids.shape[0], max_lag + 1))
    for k in range(max_lag + 1):
        start = states[n - 1 - k]
        leaves = tuple(s.clone().requires_grad_() for s in start) if isinstance(start, tuple) \
            else start.clone().requires_grad_()
        state = leaves
        for t in range(n - k, n):
            _, state = m.rnn(m.embed(ids[:, t:t + 1]), state)
        h = state[0] if isinstance(state, tuple) else state
        loss = F.cross_entropy(m.head(h[-1]), ids[:, -1], reduction="sum")
        parts = leaves if isinstance(leaves, tuple) else (leaves,)
        grads = torch.autograd.grad(loss, parts, allow_unused=True)
        out[:, k] = np.sqrt(sum(g.pow(2).sum(dim=(0, 2)).numpy() for g in grads if g is not None))
    return out


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_norms_agree_with_restarting_from_each_state(cell, layers):
    m = model(cell, layers)
    ours = gradient_norms_through_time(m, IDS, max_lag=20)
    assert ours.shape == (3, 21)
    assert np.allclose(ours, norms_by_restarting(m, IDS, 20), rtol=1e-10, atol=1e-300)


def test_plain_rnn_matches_the_backward_recurrence():
    """dL/dh_{t-1} = W_hh^T ((1 - h_t^2) * dL/dh_t), from dL/dh_n = W_out^T (softmax - one-hot)."""
    m = model("rnn")
    ids = IDS[:1]
    with torch.no_grad():
        hs = m.rnn(m.embed(torch.as_tensor(ids[:, :-1])))[0][0].numpy()
    W_hh, W_out = m.rnn.weight_hh_l0.detach().numpy(), m.head.weight.detach().numpy()
    p = torch.softmax(m.head(torch.as_tensor(hs[-1])), -1).detach().numpy()
    g = W_out.T @ (p - np.eye(11)[ids[0, -1]])
    expected = [np.linalg.norm(g)]
    for k in range(1, 25):
        g = W_hh.T @ ((1 - hs[len(hs) - k] ** 2) * g)
        expected.append(np.linalg.norm(g))
    assert np.allclose(gradient_norms_through_time(m, ids, 24)[0], expected, rtol=1e-10)


def test_without_recurrent_weights_nothing_flows_back():
    m = model("rnn")
    with torch.no_grad():
        m.rnn.weight_hh_l0.zero_()
    norms = gradient_norms_through_time(m, IDS, 5)
    assert (norms[:, 0] > 0).all() and (norms[:, 1:] == 0).all()


def test_a_large_recurrent_matrix_explodes_and_a_small_one_vanishes():
    torch.manual_seed(0)                  # wide enough that a large W_hh does not saturate at once
    m = RecurrentLM(RecurrentConfig(vocab_size=11, cell="rnn", d_embed=8, d_state=64)).double()
    W = m.rnn.weight_hh_l0.detach().clone()
    rho = torch.linalg.eigvals(W).abs().max()
    curves = {}
    for target in (0.3, 3.0):
        with torch.no_grad():
            m.rnn.weight_hh_l0.copy_(W * (target / rho))
        curves[target] = np.exp(np.log(gradient_norms_through_time(m, IDS, 24)).mean(axis=0))
    assert curves[0.3][24] < 1e-6 * curves[0.3][0]
    assert curves[3.0][24] > 100 * curves[3.0][0]


def test_leaves_the_model_alone():
    m = model("lstm")
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    gradient_norms_through_time(m, IDS, 3)
    assert m.training, "the training mode must be restored"
    assert all(p.grad is None for p in m.parameters()), "the parameters' .grad must not be touched"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("ids, lag", [(IDS[0], 3), (IDS, 25), (IDS, -1)])
def test_bad_arguments(ids, lag):
    with pytest.raises(ValueError):
        gradient_norms_through_time(model("gru"), ids, lag)
