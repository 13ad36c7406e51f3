"""Every layer's hand-written backward against float64 central differences, for its input and
every parameter (grad_error < 1e-6). The loss is sum(output * R) for a fixed random R."""
import numpy as np
import pytest

from lstmkit.layers import GRU, LSTM, Attention, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN
from oracle import grad_error, numerical_grad

TOL = 1e-6
RECURRENT = [
    pytest.param(lambda units, **kw: LSTM(units, impl="reference", **kw), id="lstm-reference"),
    pytest.param(lambda units, **kw: LSTM(units, impl="fast", **kw), id="lstm-fast"),
    pytest.param(lambda units, **kw: GRU(units, impl="reference", **kw), id="gru-reference"),
    pytest.param(GRU, id="gru-fast"),
    pytest.param(lambda units, **kw: SimpleRNN(units, impl="reference", **kw), id="simple_rnn-reference"),
    pytest.param(SimpleRNN, id="simple_rnn-fast"),
]


def built(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


def as_list(out):
    return list(out) if isinstance(out, list) else [out]


def check_layer(layer, x, wrt_input=True, before=lambda: None, extra=(), **kwargs):
    """Compare layer.grads and the returned dx with finite differences of sum(out * R).
    before() runs ahead of every forward (to fix random or carried state); extra is a list of
    (array, analytic_grad_fn) pairs for further inputs such as initial states."""
    rng = np.random.default_rng(42)
    before()
    R = [rng.standard_normal(np.shape(o)) for o in as_list(layer.forward(x, **kwargs))]

    def loss():
        before()
        return sum(float(np.sum(o * r)) for o, r in zip(as_list(layer.forward(x, **kwargs)), R))

    loss()
    dx = layer.backward(R if len(R) > 1 else R[0])
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    extras = [(arr, fn()) for arr, fn in extra]
    assert analytic, "layer has no parameters"
    for name, p in layer.params.items():
        err = grad_error(numerical_grad(loss, p), analytic[name])
        assert err < TOL, (name, err)
    if wrt_input:
        err = grad_error(numerical_grad(loss, x), dx)
        assert err < TOL, ("input", err)
    for k, (arr, g) in enumerate(extras):
        err = grad_error(numerical_grad(loss, arr), g)
        assert err < TOL, ("extra", k, err)
    return dx


def data(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
def test_dense(activation, shape):
    layer = built(Dense(5, activation=activation, dtype="float64"), shape[1:])
    layer.params["bias"][...] = data(5, seed=3) * 0.1
    check_layer(layer, data(*shape))


def test_embedding_accumulates_repeated_ids():
    layer = built(Embedding(6, 3, dtype="float64"), (4,))
    ids = np.array([[1, 2, 2, 0], [5, 1, 1, 1]])
    check_layer(layer, ids, wrt_input=False)
    assert np.all(layer.grads["embeddings"][[3, 4]] == 0)


def test_dropout_in_training():
    layer = built(Dropout(0.4, dtype="float64"), (3, 4))
    x = data(2, 3, 4)

    def reseed():
        layer.rng = np.random.default_rng(7)
    reseed()
    out = layer.forward(x, training=True)
    assert np.any(out == 0) and np.allclose(out[out != 0], x[out != 0] / 0.6)
    dx = layer.backward(np.ones_like(x))
    num = numerical_grad(lambda: (reseed(), float(layer.forward(x, training=True).sum()))[1], x)
    assert grad_error(num, dx) < TOL


def test_masking():
    layer = built(Masking(dtype="float64"), (3, 2))
    x = data(2, 3, 2)
    x[1, 2] = 0.0
    out = layer.forward(x)
    assert np.array_equal(layer.compute_mask(x, None), [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(layer.backward(np.ones_like(out))[1, 2], 0)


def rnn(make, units, I, seed=0, **kw):
    return built(make(units, dtype="float64", **kw), (None, I), seed)


@pytest.mark.parametrize("make", RECURRENT)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_recurrent(make, return_sequences):
    check_layer(rnn(make, 3, 2, return_sequences=return_sequences), data(2, 4, 2))


@pytest.mark.parametrize("make", RECURRENT)
def test_recurrent_return_state_and_initial_state(make):
    layer = rnn(make, 3, 2, return_sequences=True, return_state=True)
    states = [data(2, 3, seed=5 + k) for k in range(len(layer.state_names))]
    check_layer(layer, data(2, 4, 2), initial_state=states,
                extra=[(s, lambda k=k: layer.initial_state_grads[k]) for k, s in enumerate(states)])


@pytest.mark.parametrize("make", RECURRENT)
def test_recurrent_return_state_without_sequences_sums_both_paths(make):
    # the output is h itself, so its gradient and dh add up
    check_layer(rnn(make, 2, 3, return_state=True), data(3, 2, 3))


@pytest.mark.parametrize("make", RECURRENT)
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_recurrent_with_mask(make, zero_output_for_mask):
    layer = rnn(make, 3, 2, return_sequences=True, zero_output_for_mask=zero_output_for_mask)
    mask = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    dx = check_layer(layer, data(3, 4, 2), mask=mask)
    assert np.all(dx[~mask] == 0)


@pytest.mark.parametrize("make", RECURRENT)
def test_masking_then_recurrent_on_padded_rows(make):
    masking = built(Masking(dtype="float64"), (4, 2))
    layer = rnn(make, 3, 2)
    lengths = np.array([4, 2, 3])
    real = np.arange(4)[None, :] < lengths[:, None]
    values = data(int(real.sum()), 2)
    R = data(3, 3, seed=9)

    def loss():
        x = np.zeros((3, 4, 2))
        x[real] = values
        out = layer.forward(masking.forward(x), mask=masking.compute_mask(x, None))
        return float(np.sum(out * R))

    loss()
    dx = masking.backward(layer.backward(R))
    analytic = {k: g.copy() for k, g in layer.grads.items()}
    assert grad_error(numerical_grad(loss, values), dx[real]) < TOL
    for name, p in layer.params.items():
        assert grad_error(numerical_grad(loss, p), analytic[name]) < TOL, name


@pytest.mark.parametrize("make", RECURRENT)
def test_recurrent_input_dropout_in_training(make):
    layer = rnn(make, 3, 4, return_sequences=True, dropout=0.5)

    def reseed():
        layer.rng = np.random.default_rng(3)
    dx = check_layer(layer, data(2, 3, 4), before=reseed, training=True)
    dropped = dx == 0   # one mask per sequence and feature, shared by every time step
    assert dropped.any() and np.all(dropped == dropped[:, :1, :])


@pytest.mark.parametrize("make", RECURRENT)
@pytest.mark.parametrize("masked", [False, True])
def test_stateful_second_call_cuts_gradient_at_the_boundary(make, masked):
    # masked: the first call carries each row's state at its last real step; in the second call
    # row 1 is empty, so its carried state passes through untouched
    layer = rnn(make, 3, 2, stateful=True, return_sequences=True)
    mask = np.array([[True, True, True], [True, False, False], [True, True, False]]) if masked else None
    layer.forward(data(3, 3, 2, seed=4), mask=mask)
    carried = [s.copy() for s in layer.states]
    assert np.abs(carried[0]).sum() > 0

    def restore():
        layer.states = [s.copy() for s in carried]
    second = np.array([[True, True, False], [False, False, False], [True, True, True]]) if masked else None
    check_layer(layer, data(3, 3, 2, seed=5), before=restore, mask=second)
    if masked:
        for now, before in zip(layer.states, carried):
            np.testing.assert_array_equal(now[1], before[1])


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional(merge_mode, return_sequences):
    layer = Bidirectional(LSTM(2, impl="reference", return_sequences=return_sequences, dtype="float64"), merge_mode)
    built(layer, (None, 3))
    mask = np.array([[True, True, True, True], [True, True, True, False], [True, False, False, False]])
    check_layer(layer, data(3, 4, 3), mask=mask)


@pytest.mark.parametrize("make", RECURRENT)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_return_state(make, return_sequences):
    layer = built(Bidirectional(make(2, return_sequences=return_sequences, return_state=True, dtype="float64")),
                  (None, 3))
    check_layer(layer, data(2, 3, 3), mask=np.array([[True, True, False], [True, True, True]]))


@pytest.mark.parametrize("units", [None, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_attention(units, masked):
    layer = built(Attention(units, dtype="float64"), (None, 3))
    layer.params["bias"][...] = data(units or 3, seed=2) * 0.3
    mask = np.array([[True, True, True, True], [True, False, True, False], [False] * 4]) if masked else None
    dx = check_layer(layer, data(3, 4, 3), mask=mask)
    if masked:
        assert np.all(dx[~mask] == 0) and np.all(layer.attention_weights[~mask] == 0)
