"""The reference LSTM against finite differences, torch.nn.LSTM, and values derived by hand."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from lstmkit.cells.lstm import lstm_backward, lstm_forward, lstm_step
from oracle import assert_matches, grad_error, numerical_grad, rnn_weights_from_torch, run_torch_rnn, torch_dtype, torch_grads


def make_case(T, B, I, H, dtype, seed, lengths=None):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H).to(torch_dtype(dtype))
    W, U, b = rnn_weights_from_torch(module)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype) * 0.5
    c0 = rng.standard_normal((B, H)).astype(dtype) * 0.5
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    dc = rng.standard_normal((B, H)).astype(dtype)
    return module, (x, W, U, b, h0, c0), (dy, dh, dc)


def check_against_torch(T, B, I, H, dtype, seed, lengths=None):
    module, (x, W, U, b, h0, c0), (dy, dh, dc) = make_case(T, B, I, H, dtype, seed)
    y, (hT, cT), cache = lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    dx, dW, dU, db, dh0, dc0 = lstm_backward(dy, dh, dc, cache)
    ref = run_torch_rnn(module, x, h0, c0, lengths=lengths, dy=dy, dh=dh, dc=dc)
    tW, tU, tb = torch_grads(module)
    assert_matches([("y", y, ref["y"]), ("h", hT, ref["h"]), ("c", cT, ref["c"]),
                   ("dx", dx, ref["dx"]), ("dh0", dh0, ref["dh0"]), ("dc0", dc0, ref["dc0"]),
                   ("dW", dW, tW), ("dU", dU, tU), ("db", db, tb)], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (5, 3, 4, 6), (7, 1, 3, 2), (4, 2, 8, 1), (12, 4, 5, 5)])
def test_matches_torch(T, B, I, H, dtype):
    check_against_torch(T, B, I, H, dtype, seed=T * 100 + H)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_variable_lengths_match_packed_sequences(dtype):
    check_against_torch(6, 4, 3, 5, dtype, seed=1, lengths=[6, 1, 3, 4])


def test_outputs_past_length_are_zero_and_state_frozen():
    _, (x, W, U, b, h0, c0), _ = make_case(5, 2, 3, 4, np.float64, seed=2)
    y, (hT, cT), _ = lstm_forward(x, W, U, b, h0, c0, lengths=[2, 5])
    assert np.all(y[2:, 0] == 0)
    y2, (h2, c2), _ = lstm_forward(x[:2, :1], W, U, b, h0[:1], c0[:1])
    np.testing.assert_array_equal(hT[0], h2[0])
    np.testing.assert_array_equal(cT[0], c2[0])


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 5),
       seed=st.integers(0, 10_000), variable=st.booleans())
def test_property_matches_torch(T, B, I, H, seed, variable):
    lengths = None
    if variable:
        lengths = list(np.random.default_rng(seed).integers(1, T + 1, size=B))
    check_against_torch(T, B, I, H, np.float64, seed, lengths=lengths)


@pytest.mark.parametrize("lengths", [None, [3, 1]])
def test_finite_differences(lengths):
    _, (x, W, U, b, h0, c0), (dy, dh, dc) = make_case(3, 2, 3, 2, np.float64, seed=3)

    def loss():
        y, (hT, cT), _ = lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
        return np.sum(y * dy) + np.sum(hT * dh) + np.sum(cT * dc)

    _, _, cache = lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    grads = lstm_backward(dy, dh, dc, cache)
    for name, arr, g in zip(["x", "W", "U", "b", "h0", "c0"], [x, W, U, b, h0, c0], grads):
        num = numerical_grad(loss, arr)
        assert grad_error(num, g) < 1e-6, (name, grad_error(num, g))


def test_golden_values_from_constant_weights():
    # I=2, H=2, W=0.1, U=0.2, b=0, x_t=[1, 1], h0=c0=0: every unit and every gate is the same
    # number, so the equations reduce to scalars we can write out.
    W = np.full((2, 8), 0.1)
    U = np.full((2, 8), 0.2)
    b = np.zeros(8)
    x = np.ones((2, 1, 2))
    y, (hT, cT), _ = lstm_forward(x, W, U, b)

    sig = lambda v: 1 / (1 + math.exp(-v))
    z1 = 0.1 * 2                                  # x W, h0 = 0
    c1 = sig(z1) * math.tanh(z1)                  # f * 0 + i * g
    h1 = sig(z1) * math.tanh(c1)
    z2 = 0.1 * 2 + 0.2 * 2 * h1                   # x W + h1 U
    c2 = sig(z2) * c1 + sig(z2) * math.tanh(z2)
    h2 = sig(z2) * math.tanh(c2)
    np.testing.assert_allclose(y[:, 0, 0], [h1, h2], rtol=1e-14)
    np.testing.assert_allclose(hT, [[h2, h2]], rtol=1e-14)
    np.testing.assert_allclose(cT, [[c2, c2]], rtol=1e-14)
    assert abs(h1 - 0.05944) < 1e-5  # the number itself, so a silent change of formula shows


def test_step_equals_sequence():
    _, (x, W, U, b, h0, c0), _ = make_case(4, 2, 3, 5, np.float64, seed=4)
    y, (hT, cT), _ = lstm_forward(x, W, U, b, h0, c0)
    h, c = h0, c0
    for t in range(4):
        h, c = lstm_step(x[t], h, c, W, U, b)
        np.testing.assert_allclose(h, y[t], rtol=1e-14)
    np.testing.assert_allclose(c, cT, rtol=1e-14)


@pytest.mark.parametrize("change,message", [
    (dict(x=np.zeros((2, 3))), "time-major"),
    (dict(W=np.zeros((5, 8))), "W must be"),
    (dict(U=np.zeros((2, 7))), "U must be"),
    (dict(b=np.zeros(7)), "b must have shape"),
    (dict(h0=np.zeros((3, 2))), "h0 must be"),
    (dict(c0=np.zeros((1, 2))), "c0 must be"),
    (dict(lengths=[5, 1]), "lengths must be"),
])
def test_wrong_shapes_are_clear_errors(change, message):
    args = dict(x=np.zeros((3, 2, 4)), W=np.zeros((4, 8)), U=np.zeros((2, 8)), b=np.zeros(8),
                h0=None, c0=None, lengths=None)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        lstm_forward(**args)
