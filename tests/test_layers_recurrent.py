"""LSTM, GRU and SimpleRNN layers against torch.nn.LSTM/GRU/RNN (batch_first=True) on the same
weights: outputs, final states and every gradient, with and without padding masks."""

import numpy as np
import pytest
import torch

from lstmkit.layers import GRU, LSTM, LAYERS, SimpleRNN
from oracle import rel_error, rnn_weights_from_torch, to_numpy, torch_dtype, torch_grads

KINDS = [  # layer factory, torch module, whether torch's two biases are summed
    pytest.param(lambda H, **kw: LSTM(H, impl="reference", **kw), torch.nn.LSTM, True, id="lstm-reference"),
    pytest.param(lambda H, **kw: LSTM(H, impl="fast", **kw), torch.nn.LSTM, True, id="lstm-fast"),
    pytest.param(lambda H, **kw: GRU(H, impl="reference", **kw), torch.nn.GRU, False, id="gru-reference"),
    pytest.param(GRU, torch.nn.GRU, False, id="gru-fast"),
    pytest.param(lambda H, **kw: SimpleRNN(H, impl="reference", **kw), torch.nn.RNN, True, id="simple_rnn-reference"),
    pytest.param(SimpleRNN, torch.nn.RNN, True, id="simple_rnn-fast"),
]


def compare(make, module_cls, sum_biases, B, T, I, H, dtype, lengths=None, seed=0):
    torch.manual_seed(seed)
    tdt = torch_dtype(dtype)
    module = module_cls(I, H, batch_first=True).to(tdt)
    is_lstm = module_cls is torch.nn.LSTM
    layer = make(H, return_sequences=True, return_state=True, zero_output_for_mask=True,
                 dtype=np.dtype(dtype).name)
    layer.build((T, I), np.random.default_rng(0))
    layer.set_weights(rnn_weights_from_torch(module, sum_biases=sum_biases))
    n = 2 if is_lstm else 1
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((B, T, I))
    states0 = [rng.standard_normal((B, H)) for _ in range(n)]
    dy = rng.standard_normal((B, T, H))
    dstates = [rng.standard_normal((B, H)) for _ in range(n)]

    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    st = [torch.tensor(s[None], dtype=tdt, requires_grad=True) for s in states0]
    inp = xt if lengths is None else torch.nn.utils.rnn.pack_padded_sequence(
        xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    yt, final = module(inp, tuple(st) if is_lstm else st[0])
    if lengths is not None:
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, batch_first=True, total_length=T)
    final = list(final) if is_lstm else [final]
    loss = (yt * torch.tensor(dy, dtype=tdt)).sum()
    for f, d in zip(final, dstates):
        loss = loss + (f[0] * torch.tensor(d, dtype=tdt)).sum()
    loss.backward()

    mask = None if lengths is None else np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    outs = layer.forward(x, mask=mask, initial_state=states0)
    dx = layer.backward([dy, *dstates])
    tol = 1e-10 if dtype == np.float64 else 1e-5
    pairs = [("y", outs[0], yt), ("dx", dx, xt.grad)]
    pairs += [(f"state{k}", o, f[0]) for k, (o, f) in enumerate(zip(outs[1:], final))]
    pairs += [(f"dstate{k}", g, s.grad[0]) for k, (g, s) in enumerate(zip(layer.initial_state_grads, st))]
    pairs += list(zip(("dkernel", "drecurrent", "dbias"), [layer.grads[k] for k in layer.grads],
                      torch_grads(module, sum_biases=sum_biases)))
    for name, ours, theirs in pairs:
        theirs = to_numpy(theirs) if isinstance(theirs, torch.Tensor) else theirs
        assert ours.dtype == dtype, name
        assert rel_error(ours, theirs) < tol, (name, rel_error(ours, theirs))


@pytest.mark.parametrize("make,module_cls,sum_biases", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 1, 1), (3, 5, 4, 6), (2, 7, 3, 2)])
def test_matches_torch(make, module_cls, sum_biases, B, T, I, H, dtype):
    compare(make, module_cls, sum_biases, B, T, I, H, dtype, seed=T * 10 + H)


@pytest.mark.parametrize("make,module_cls,sum_biases", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masks_match_packed_sequences(make, module_cls, sum_biases, dtype):
    compare(make, module_cls, sum_biases, 4, 6, 3, 5, dtype, lengths=[6, 1, 3, 4], seed=1)


@pytest.mark.parametrize("cls", [GRU, SimpleRNN])
def test_defaults_and_config(cls):
    layer = cls(3, return_sequences=True, dropout=0.1)
    layer.build((None, 2), np.random.default_rng(0))
    W, U, b = layer.get_weights()
    gates = 3 if cls is GRU else 1
    assert W.shape == (2, 3 * gates) and U.shape == (3, 3 * gates) and np.all(b == 0)
    np.testing.assert_allclose(U @ U.T, np.eye(3), atol=1e-6)    # Keras's orthogonal: orthonormal rows
    if cls is SimpleRNN:
        np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-6)
    assert b.shape == ((2, 9) if cls is GRU else (3,))
    config = layer.get_config()
    assert LAYERS[cls.__name__](**config).get_config() == config
    out = layer.forward(np.ones((4, 5, 2)), mask=np.arange(5)[None, :] < np.array([[5], [4], [1], [2]]))
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    h = cls(3, return_state=True)
    h.build((None, 2), np.random.default_rng(0))
    out, state = h.forward(np.ones((1, 2, 2)), initial_state=np.zeros((1, 3)))
    np.testing.assert_array_equal(out, state)
    with pytest.raises(ValueError, match=r"initial_state must be a list \[h\]"):
        h.forward(np.ones((1, 2, 2)), initial_state=[np.zeros((1, 3))] * 2)
    assert layer.impl == "fast"                                  # the compiled kernels by default
    with pytest.raises(ValueError, match="impl must be one of"):
        cls(3, impl="cuda")


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_stack_of_lstm_layers_matches_multilayer_torch_lstm(impl):
    B, T, I, H = 2, 4, 3, 5
    torch.manual_seed(3)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True).double()
    first = LSTM(H, return_sequences=True, impl=impl, dtype="float64")
    second = LSTM(H, return_sequences=True, impl=impl, dtype="float64")
    for k, layer in enumerate([first, second]):
        layer.build((T, I if k == 0 else H), np.random.default_rng(k))
        layer.set_weights(rnn_weights_from_torch(module, layer=k))
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, H))
    xt = torch.tensor(x, requires_grad=True)
    yt, _ = module(xt)
    (yt * torch.tensor(dy)).sum().backward()
    y = second.forward(first.forward(x))
    dx = first.backward(second.backward(dy))
    assert rel_error(y, to_numpy(yt)) < 1e-10 and rel_error(dx, to_numpy(xt.grad)) < 1e-10
    for k, layer in enumerate([first, second]):
        for ours, theirs in zip(layer.grads.values(), torch_grads(module, layer=k)):
            assert rel_error(ours, theirs) < 1e-10


def test_gru_keras_golden_values():
    # Keras's GRU test (reset_after=True): kernel 0.01, recurrent 0.02, bias 0.03. With constant
    # weights Keras's gate order (z, r, h) and PyTorch's (r, z, n) give the same numbers.
    def constant_gru(units, I, **kw):
        layer = GRU(units, **kw)
        layer.build((None, I), np.random.default_rng(0))
        layer.set_weights([np.full((I, 3 * units), 0.01), np.full((units, 3 * units), 0.02),
                           np.full((2, 3 * units), 0.03)])
        return layer

    out = constant_gru(3, 4).forward(np.arange(72).reshape((3, 6, 4)).astype("float32"))
    np.testing.assert_allclose(out, np.repeat([[0.5217289], [0.6371659], [0.39384964]], 3, axis=1), rtol=1e-5, atol=1e-5)
    seq = np.arange(24).reshape((2, 4, 3)).astype("float32")
    out = constant_gru(2, 3).forward(seq, initial_state=np.arange(4).reshape((2, 2)).astype("float32"))
    np.testing.assert_allclose(out, [[0.23774096, 0.33508456], [0.83659905, 1.0227708]], rtol=1e-5, atol=1e-5)
    layer = constant_gru(4, 4, stateful=True)
    seq = np.arange(24).reshape((2, 3, 4)).astype("float32")
    layer.forward(seq)
    np.testing.assert_allclose(layer.forward(seq), np.repeat([[0.29542392], [0.5885018]], 4, axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_input_dropout_scales_kept_inputs_only_while_training(training):
    # h_t = tanh(x_t) with W = I, U = 0, b = 0, so arctanh(output) is the input the cell saw
    layer = SimpleRNN(4, return_sequences=True, dropout=0.5, dtype="float64")
    layer.build((None, 4), np.random.default_rng(0))
    layer.set_weights([np.eye(4), np.zeros((4, 4)), np.zeros(4)])
    x = np.random.default_rng(1).uniform(0.1, 0.5, (3, 5, 4))
    seen = np.arctanh(layer.forward(x, training=training)) / x
    if not training:
        np.testing.assert_allclose(seen, 1.0, rtol=1e-12)
        return
    scale = np.round(seen, 8)
    assert set(np.unique(scale)) == {0.0, 2.0}                   # dropped, or kept and scaled by 1/(1-0.5)
    np.testing.assert_array_equal(scale, np.repeat(scale[:, :1], 5, axis=1))   # the same at every step
