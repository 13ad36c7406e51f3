"""The GRU and the tanh RNN (reference and compiled) against finite differences, torch.nn.GRU /
torch.nn.RNN, and values derived by hand. The cells carry one state h, so they share every test
but their golden values; the LSTM (two states) has its own modules."""
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import lstmkit
from lstmkit.cells import gru, rnn
from lstmkit.kernels import common, gru as fast_gru, rnn as fast_rnn
from oracle import assert_matches, grad_error, numerical_grad, rnn_weights_from_torch, run_torch_rnn, torch_dtype, torch_grads

CELLS = {
    # b (2, 3H) = b_ih, b_hh for the GRU (the reset gate scales b_hn); b (H,) = b_ih + b_hh for the RNN
    "gru": SimpleNamespace(forward=gru.gru_forward, backward=gru.gru_backward, step=gru.gru_step,
                           module=lambda I, H: torch.nn.GRU(I, H), sum_biases=False),
    "gru_fast": SimpleNamespace(forward=fast_gru.gru_forward, backward=fast_gru.gru_backward, step=fast_gru.gru_step,
                                module=lambda I, H: torch.nn.GRU(I, H), sum_biases=False),
    "rnn": SimpleNamespace(forward=rnn.rnn_forward, backward=rnn.rnn_backward, step=rnn.rnn_step,
                           module=lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"), sum_biases=True),
    "rnn_fast": SimpleNamespace(forward=fast_rnn.rnn_forward, backward=fast_rnn.rnn_backward, step=fast_rnn.rnn_step,
                                module=lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"), sum_biases=True),
}
both = pytest.mark.parametrize("cell", list(CELLS))


def make_case(cell, T, B, I, H, dtype, seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    module = CELLS[cell].module(I, H).to(torch_dtype(dtype))
    W, U, b = rnn_weights_from_torch(module, sum_biases=CELLS[cell].sum_biases)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype) * 0.5
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    return module, (x, W, U, b, h0), (dy, dh)


def check_against_torch(cell, T, B, I, H, dtype, seed, lengths=None):
    c = CELLS[cell]
    module, (x, W, U, b, h0), (dy, dh) = make_case(cell, T, B, I, H, dtype, seed)
    y, hT, cache = c.forward(x, W, U, b, h0, lengths=lengths)
    dx, dW, dU, db, dh0 = c.backward(dy, dh, cache)
    ref = run_torch_rnn(module, x, h0, lengths=lengths, dy=dy, dh=dh)
    tW, tU, tb = torch_grads(module, sum_biases=c.sum_biases)
    assert_matches([("y", y, ref["y"]), ("h", hT, ref["h"]), ("dx", dx, ref["dx"]),
                   ("dh0", dh0, ref["dh0"]), ("dW", dW, tW), ("dU", dU, tU), ("db", db, tb)], dtype)


@both
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (5, 3, 4, 6), (7, 1, 3, 2), (4, 2, 8, 1), (12, 4, 5, 5)])
def test_matches_torch(cell, T, B, I, H, dtype):
    check_against_torch(cell, T, B, I, H, dtype, seed=T * 100 + H)


@both
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_variable_lengths_match_packed_sequences(cell, dtype):
    check_against_torch(cell, 6, 4, 3, 5, dtype, seed=1, lengths=[6, 1, 3, 4])


@both
def test_outputs_past_length_are_zero_and_state_frozen(cell):
    forward = CELLS[cell].forward
    _, (x, W, U, b, h0), _ = make_case(cell, 5, 2, 3, 4, np.float64, seed=2)
    y, hT, _ = forward(x, W, U, b, h0, lengths=[2, 5])
    assert np.all(y[2:, 0] == 0)
    _, h2, _ = forward(x[:2, :1], W, U, b, h0[:1])
    np.testing.assert_array_equal(hT[0], h2[0])


@both
def test_default_h0_is_zero(cell):
    forward = CELLS[cell].forward
    _, (x, W, U, b, _), _ = make_case(cell, 3, 2, 3, 4, np.float64, seed=5)
    y, hT, _ = forward(x, W, U, b)
    y0, h0T, _ = forward(x, W, U, b, np.zeros((2, 4)))
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(hT, h0T)


@both
@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 5),
       seed=st.integers(0, 10_000), variable=st.booleans())
def test_property_matches_torch(cell, T, B, I, H, seed, variable):
    lengths = None
    if variable:
        lengths = list(np.random.default_rng(seed).integers(1, T + 1, size=B))
    check_against_torch(cell, T, B, I, H, np.float64, seed, lengths=lengths)


@both
@pytest.mark.parametrize("lengths", [None, [3, 1]])
def test_finite_differences(cell, lengths):
    c = CELLS[cell]
    _, (x, W, U, b, h0), (dy, dh) = make_case(cell, 3, 2, 3, 2, np.float64, seed=3)

    def loss():
        y, hT, _ = c.forward(x, W, U, b, h0, lengths=lengths)
        return np.sum(y * dy) + np.sum(hT * dh)

    _, _, cache = c.forward(x, W, U, b, h0, lengths=lengths)
    grads = c.backward(dy, dh, cache)
    for name, arr, g in zip(["x", "W", "U", "b", "h0"], [x, W, U, b, h0], grads):
        num = numerical_grad(loss, arr)
        assert grad_error(num, g) < 1e-6, (name, grad_error(num, g))


@both
def test_step_equals_sequence(cell):
    c = CELLS[cell]
    _, (x, W, U, b, h0), _ = make_case(cell, 4, 2, 3, 5, np.float64, seed=4)
    y, hT, _ = c.forward(x, W, U, b, h0)
    h = h0
    for t in range(4):
        h = c.step(x[t], h, W, U, b)
        np.testing.assert_allclose(h, y[t], rtol=1e-14)
    np.testing.assert_allclose(h, hT, rtol=1e-14)


@both
def test_wrong_shapes_raise_value_error(cell):
    forward = CELLS[cell].forward
    _, (x, W, U, b, h0), _ = make_case(cell, 3, 2, 3, 4, np.float64, seed=6)
    with pytest.raises(ValueError, match="time-major"):
        forward(x[0], W, U, b)
    with pytest.raises(ValueError, match="W must (be|have shape)"):
        forward(x, W[:2], U, b)
    with pytest.raises(ValueError, match="U must be"):
        forward(x, W, U[:, :3], b)
    with pytest.raises(ValueError, match="b must have shape"):
        forward(x, W, U, b[..., :3])
    if cell.startswith("gru"):       # the GRU keeps b_ih and b_hh apart: a summed bias is refused
        with pytest.raises(ValueError, match="b must have shape"):
            forward(x, W, U, b.sum(axis=0))
    with pytest.raises(ValueError, match="h0 must (be|have shape)"):
        forward(x, W, U, b, h0.T)
    with pytest.raises(ValueError, match="lengths"):
        forward(x, W, U, b, h0, lengths=[4, 1])
    with pytest.raises(ValueError, match="lengths"):
        forward(x, W, U, b, h0, lengths=[1, -1])


fast = pytest.mark.parametrize("cell", ["gru_fast", "rnn_fast"])


@fast
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,I,H,lengths", [
    (6, 9, 5, 32, None), (4, 16, 8, 24, None),        # packed 8 x 32 tiles; H not a multiple of 32
    (2, 16, 3, 256, None), (4, 32, 8, 64, None),      # batch rows split among the threads (GRU)
    (3, 17, 5, 256, [3] * 15 + [1, 2]),               # ... unevenly, with lengths
    (6, 1, 7, 128, None), (3, 5, 4, 32, [3, 1, 2, 3, 1]),   # one-row tiles (batch < 8)
    (2, 3, 520, 32, None), (2, 16, 3, 1056, None)])   # x W by BLAS; dh U^T in blocks of k (K > 1024)
def test_fast_cells_at_kernel_shapes(cell, T, B, I, H, lengths, dtype):
    check_against_torch(cell, T, B, I, H, dtype, seed=T * 100 + H, lengths=lengths)


@fast
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("T,B,I,H,dtype", [(3, 17, 5, 256, np.float32), (4, 32, 8, 64, np.float32),
                                           (3, 26, 5, 128, np.float32), (2, 16, 3, 256, np.float64),
                                           (40, 30, 32, 128, np.float32),   # products of each thread's own rows
                                           (120, 3, 40, 128, np.float32),   # products beside the recurrence
                                           (60, 2, 16, 64, np.float64)])    # ... by BLAS
def test_fast_cells_give_the_same_numbers_on_every_thread_count(cell, n, T, B, I, H, dtype):
    try:
        lstmkit.set_num_threads(n)
        if B < 8 and n > 1:           # a batch too small to split: a second thread does the products
            G = H * (3 if cell == "gru_fast" else 1)
            assert common.backward_plan(T, B, I, H, G, 1, dtype)[2][1] > 0
            packed_w = dtype == np.float32     # x W ahead of the recurrence needs W packed
            assert (len(common.forward_plan(T, B, I, G, 1, packed_w)[1]) == 2) == packed_w   # 2 threads
        if B == 30 and n > 1:
            G = H * (3 if cell == "gru_fast" else 1)
            assert common.batch_parts(B, H, G, dtype) == n and common.backward_plan(T, B, I, H, G, n, dtype)[3]
        check_against_torch(cell, T, B, I, H, dtype, seed=n + H, lengths=[T] * (B - 2) + [1, 2])
    finally:
        lstmkit.set_num_threads(os.cpu_count() or 1)


@fast
@pytest.mark.parametrize("B,H", [(9, 64), (1, 128)])
def test_fast_step_equals_sequence_in_float32(cell, B, H):
    # the step runs BLAS, the sequence the packed tiles: the same numbers to float32 rounding
    c = CELLS[cell]
    _, (x, W, U, b, h0), _ = make_case(cell, 4, B, 6, H, np.float32, seed=B)
    y, hT, _ = c.forward(x, W, U, b, h0)
    h = h0
    for t in range(4):
        h = c.step(x[t], h, W, U, b)
        assert h.dtype == np.float32
        np.testing.assert_allclose(h, y[t], rtol=1e-5, atol=1e-6)


@fast
def test_fast_backward_defaults_repeats_and_strided_inputs(cell):
    # dh_T None is zeros; backward twice on one cache gives the same gradients; strided views of
    # every input give the numbers of their contiguous copies.
    c = CELLS[cell]
    _, (x, W, U, b, h0), (dy, dh) = make_case(cell, 3, 17, 6, 64, np.float32, seed=7)
    y, hT, cache = c.forward(x, W, U, b, h0)
    first = c.backward(dy, None, cache)
    for g, again, zero in zip(first, c.backward(dy, None, cache), c.backward(dy, np.zeros_like(dh), cache)):
        assert np.array_equal(g, again) and np.array_equal(g, zero)
    wide = lambda a: np.repeat(a, 2, axis=-1)[..., ::2]           # the same values, stride 2
    ys, hs, cs = c.forward(wide(x), wide(W), wide(U), wide(b), wide(h0))
    assert np.array_equal(ys, y) and np.array_equal(hs, hT)
    for g, gs in zip(c.backward(wide(dy), wide(dh), cache), c.backward(dy, dh, cache)):
        assert np.array_equal(g, gs)


@fast
@pytest.mark.parametrize("B,H", [(3, 5), (17, 256)])
def test_fast_zero_length_matches_reference(cell, B, H):
    # torch refuses empty sequences; a sequence of length 0 keeps h0 and passes dh straight through.
    c, ref = CELLS[cell], CELLS[cell.replace("_fast", "")]
    _, (x, W, U, b, h0), (dy, dh) = make_case(cell, 3, B, 4, H, np.float32, seed=B)
    lengths = [0] + [3] * (B - 1)
    y, hT, cache = c.forward(x, W, U, b, h0, lengths=lengths)
    ry, rhT, rcache = ref.forward(x, W, U, b, h0, lengths=lengths)
    got = [y, hT, *c.backward(dy, dh, cache)]
    want = [ry, rhT, *ref.backward(dy, dh, rcache)]
    assert_matches([(str(k), a, w) for k, (a, w) in enumerate(zip(got, want))], np.float32)
    assert np.all(got[0][:, 0] == 0) and np.array_equal(got[1][0], h0[0]) and np.array_equal(got[-1][0], dh[0])


@pytest.mark.parametrize("impl", [gru, fast_gru])
def test_gru_golden_values_from_constant_weights(impl):
    # I=2, H=2, W=0.1, U=0.2, b_ih=0.1, b_hh=0.3, x_t=[1, 1], h0=0: every unit of a gate is the
    # same number, so the equations reduce to scalars. b_hh != 0 shows that r scales b_hn.
    W = np.full((2, 6), 0.1)
    U = np.full((2, 6), 0.2)
    b = np.stack([np.full(6, 0.1), np.full(6, 0.3)])
    x = np.ones((2, 1, 2))
    y, hT, _ = impl.gru_forward(x, W, U, b)

    sig = lambda v: 1 / (1 + math.exp(-v))
    a1 = 0.1 * 2 + 0.1 + 0.3                      # x W + b_ih + h0 U + b_hh, h0 = 0
    r1 = z1 = sig(a1)
    n1 = math.tanh(0.1 * 2 + 0.1 + r1 * 0.3)      # r * (h0 U_n + b_hn)
    h1 = (1 - z1) * n1                            # + z1 * h0 = 0
    a2 = 0.1 * 2 + 0.1 + 0.2 * 2 * h1 + 0.3
    r2 = z2 = sig(a2)
    n2 = math.tanh(0.1 * 2 + 0.1 + r2 * (0.2 * 2 * h1 + 0.3))
    h2 = (1 - z2) * n2 + z2 * h1
    np.testing.assert_allclose(y[:, 0, 0], [h1, h2], rtol=1e-14)
    np.testing.assert_allclose(hT, [[h2, h2]], rtol=1e-14)
    assert abs(h1 - 0.16199) < 1e-5 and abs(h2 - 0.27464) < 1e-5  # the numbers themselves


@pytest.mark.parametrize("impl", [rnn, fast_rnn])
def test_rnn_golden_values_from_constant_weights(impl):
    # I=2, H=2, W=0.1, U=0.2, b=0.1, x_t=[1, 1], h0=0: every unit is the same number.
    W = np.full((2, 2), 0.1)
    U = np.full((2, 2), 0.2)
    b = np.full(2, 0.1)
    x = np.ones((2, 1, 2))
    y, hT, _ = impl.rnn_forward(x, W, U, b)

    h1 = math.tanh(0.1 * 2 + 0.1)                 # x W + b, h0 = 0
    h2 = math.tanh(0.1 * 2 + 0.2 * 2 * h1 + 0.1)  # x W + h1 U + b
    np.testing.assert_allclose(y[:, 0, 0], [h1, h2], rtol=1e-14)
    np.testing.assert_allclose(hT, [[h2, h2]], rtol=1e-14)
    assert abs(h1 - 0.29131) < 1e-5 and abs(h2 - 0.39400) < 1e-5  # the numbers themselves


def test_rnn_gradient_through_time_is_the_product_of_jacobians():
    # The module docstring's claim: dh_T/dh_0 = prod_t U^T diag(1 - h_t^2) (row-vector form), so
    # with a small U the gradient reaching h0 shrinks geometrically with T.
    _, (x, W, U, b, h0), _ = make_case("rnn", 30, 1, 3, 4, np.float64, seed=7)
    U = U * 0.5
    y, _, cache = rnn.rnn_forward(x, W, U, b, h0)
    dh = np.ones((1, 4))
    *_, dh0 = rnn.rnn_backward(np.zeros_like(y), dh, cache)
    expected = dh
    for t in reversed(range(30)):
        expected = (expected * (1 - y[t] ** 2)) @ U.T
    np.testing.assert_allclose(dh0, expected, rtol=1e-12)
    assert np.max(np.abs(dh0)) < 1e-6
