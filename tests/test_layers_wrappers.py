"""Bidirectional and Attention: agreement with torch's bidirectional LSTM, reversal of the real
prefix only, attention weights, configs, and errors."""
import json

import numpy as np
import pytest
import torch

from lstmkit.layers import GRU, LAYERS, LSTM, Attention, Bidirectional, Dense
from oracle import rel_error, to_numpy


def built(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


def torch_weights(module, suffix):
    W = to_numpy(getattr(module, "weight_ih_l0" + suffix)).T
    U = to_numpy(getattr(module, "weight_hh_l0" + suffix)).T
    b = to_numpy(getattr(module, "bias_ih_l0" + suffix)) + to_numpy(getattr(module, "bias_hh_l0" + suffix))
    return [W, U, b]


def test_matches_torch_bidirectional_lstm_with_padding():
    B, T, I, H = 3, 5, 4, 3
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, batch_first=True, bidirectional=True).double()
    layer = built(Bidirectional(LSTM(H, return_sequences=True, impl="reference", dtype="float64")), (T, I))
    layer.set_weights(torch_weights(module, "") + torch_weights(module, "_reverse"))
    lengths = [5, 2, 4]
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, 2 * H))

    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    packed_y, (h_n, _) = module(packed)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_y, batch_first=True, total_length=T)
    (yt * torch.tensor(dy)).sum().backward()

    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    y = layer.forward(x, mask=mask)
    dx = layer.backward(dy)
    assert rel_error(y, to_numpy(yt)) < 1e-10
    assert rel_error(dx, to_numpy(xt.grad)) < 1e-10
    grads = [layer.grads[k] for k in layer.grads]
    for k, (suffix, start) in enumerate([("", 0), ("_reverse", 3)]):
        W, U, g_ih = (to_numpy(getattr(module, n + "_l0" + suffix).grad) for n in ("weight_ih", "weight_hh", "bias_ih"))
        assert rel_error(grads[start], W.T) < 1e-10 and rel_error(grads[start + 1], U.T) < 1e-10
        assert rel_error(grads[start + 2], g_ih) < 1e-10
    last = built(Bidirectional(LSTM(H, impl="reference", dtype="float64")), (T, I))   # the final states
    last.set_weights(layer.get_weights())
    assert rel_error(last.forward(x, mask=mask), np.concatenate(to_numpy(h_n), axis=-1)) < 1e-10


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initial_state_matches_torch_bidirectional(cell):
    # initial_state = [*forward states, *backward states] (Keras's order) is torch's h0 (and c0)
    # of shape (2, batch, units): direction 0 forward, 1 reverse. The outputs, the gradients of x,
    # the weights and the initial states match, with padding.
    B, T, I, H = 3, 5, 4, 3
    torch.manual_seed(1)
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True, bidirectional=True).double()
    inner = (LSTM if cell == "lstm" else GRU)(H, return_sequences=True, dtype="float64")
    layer = built(Bidirectional(inner), (T, I))
    if cell == "lstm":
        layer.set_weights(torch_weights(module, "") + torch_weights(module, "_reverse"))
    else:
        layer.set_weights([w for suffix in ("", "_reverse") for w in (
            to_numpy(getattr(module, "weight_ih_l0" + suffix)).T, to_numpy(getattr(module, "weight_hh_l0" + suffix)).T,
            np.stack([to_numpy(getattr(module, "bias_ih_l0" + suffix)), to_numpy(getattr(module, "bias_hh_l0" + suffix))]))])
    lengths = [5, 2, 4]
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, 2 * H))
    states = [rng.standard_normal((2, B, H)) for _ in range(2 if cell == "lstm" else 1)]

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    packed_y, _ = module(packed, tuple(st) if cell == "lstm" else st[0])
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_y, batch_first=True, total_length=T)
    (yt * torch.tensor(dy)).sum().backward()

    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    initial = [s[0] for s in states] + [s[1] for s in states]
    y = layer.forward(x, mask=mask, initial_state=initial)
    dx = layer.backward(dy)
    assert rel_error(y, to_numpy(yt)) < 1e-10
    assert rel_error(dx, to_numpy(xt.grad)) < 1e-10
    want = [to_numpy(t.grad)[0] for t in st] + [to_numpy(t.grad)[1] for t in st]
    assert len(layer.initial_state_grads) == len(want)
    for ours, theirs in zip(layer.initial_state_grads, want):
        assert rel_error(ours, theirs) < 1e-10
    weight_grads = [to_numpy(getattr(module, n + "_l0" + suffix).grad)
                    for suffix in ("", "_reverse") for n in ("weight_ih", "weight_hh")]
    ours = [layer.grads[k] for k in layer.grads if "bias" not in k]
    for g, w in zip(ours, weight_grads):
        assert rel_error(g, w.T) < 1e-10
    with pytest.raises(ValueError, match=r"initial_state must be a list of \d arrays \[forward h"):
        layer.forward(x, initial_state=initial[:1])


def test_backward_layer_reads_the_real_prefix_reversed():
    layer = built(Bidirectional(GRU(2, return_sequences=True, dtype="float64"), merge_mode="concat"), (None, 3))
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    out = layer.forward(x, mask=mask)
    alone = layer.backward_layer.forward(x[:1, 2::-1])      # row 0: steps 2, 1, 0
    np.testing.assert_allclose(out[0, :3, 2:], alone[0, ::-1], rtol=1e-12)
    np.testing.assert_array_equal(out[0, 3], 0)
    np.testing.assert_allclose(out[1, :, 2:], layer.backward_layer.forward(x[1:, ::-1])[0, ::-1], rtol=1e-12)
    np.testing.assert_allclose(out[:, :, :2], layer.forward_layer.forward(x, mask=mask), rtol=1e-12)


def test_bidirectional_shapes_weights_and_config():
    layer = Bidirectional(LSTM(3, return_sequences=True, impl="reference"), merge_mode="sum")
    built(layer, (6, 2))
    assert layer.output_shape((6, 2)) == (6, 3)
    assert Bidirectional(LSTM(3, impl="reference")).output_shape((6, 2)) == (6,)
    names = ("kernel", "recurrent_kernel", "bias")
    assert list(layer.params) == [p + k for p in ("forward_", "backward_") for k in names]
    weights = layer.get_weights()
    assert not np.array_equal(weights[0], weights[3])      # the copy has its own initial weights
    new = [w + 1 for w in weights]
    layer.set_weights(new)
    np.testing.assert_array_equal(layer.backward_layer.params["kernel"], new[3])
    mask = np.ones((1, 6), bool)
    assert layer.compute_mask(None, mask) is mask
    config = json.loads(json.dumps(layer.get_config()))
    again = LAYERS["Bidirectional"](**config)
    assert again.get_config() == config and isinstance(again.forward_layer, LSTM)
    assert built(Bidirectional(LSTM(3, impl="reference")), (6, 2)).compute_mask(None, mask) is None
    state = Bidirectional(LSTM(3, return_state=True, impl="reference"))
    assert state.output_shape((6, 2)) == [(6,), (3,), (3,), (3,), (3,)]
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="wraps a recurrent layer"):
        Bidirectional(Dense(3))


def test_attention_weights_pool_over_real_steps():
    layer = built(Attention(dtype="float64"), (None, 2))
    x = np.random.default_rng(0).standard_normal((2, 3, 2))
    mask = np.array([[True, True, False], [True, True, True]])
    out = layer.forward(x, mask=mask)
    alpha = layer.attention_weights
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0)
    assert alpha[0, 2] == 0
    np.testing.assert_allclose(out, np.einsum("bt,bth->bh", alpha, x))
    layer.params["context"][...] = 0                     # equal scores: the mean of the real steps
    np.testing.assert_allclose(layer.forward(x, mask=mask)[0], x[0, :2].mean(axis=0))
    np.testing.assert_array_equal(layer.forward(x, mask=np.zeros((2, 3), bool)), 0)
    assert layer.compute_mask(x, mask) is None and layer.output_shape((3, 2)) == (2,)


def test_attention_config_and_errors():
    layer = Attention(units=5, name="pool")
    config = json.loads(json.dumps(layer.get_config()))
    assert LAYERS["Attention"](**config).get_config() == config
    built(layer, (None, 3))
    assert [w.shape for w in layer.get_weights()] == [(3, 5), (5,), (5,)]
    with pytest.raises(ValueError, match=r"\(batch, time, 3\), got \(2, 3\)"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, time\) = \(2, 4\)"):
        layer.forward(np.zeros((2, 4, 3)), mask=np.ones((2, 3), bool))


def test_bidirectional_backward_takes_none_for_zero_and_checks_shapes():
    layer = built(Bidirectional(GRU(2, return_sequences=True, return_state=True, dtype="float64")), (None, 3))
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    layer.forward(x)
    dh = [np.ones((2, 2)), np.full((2, 2), 2.0)]
    np.testing.assert_array_equal(layer.backward([None, *dh]), layer.backward([np.zeros((2, 4, 4)), *dh]))
    with pytest.raises(ValueError, match=r"bidirectional backward expects a gradient of shape \(2, 4, 4\), got \(2, 4, 2\)"):
        layer.backward([np.zeros((2, 4, 2)), *dh])


def test_attention_weights_ignore_padded_scores_even_when_they_dwarf_the_real_ones():
    # scores are v . tanh(.) in [-200, 200]: exp of -400 underflows in float32, so the softmax's
    # shift must be the largest real score, not a padded one
    layer = built(Attention(units=1), (None, 1))
    layer.set_weights([np.ones((1, 1)), np.zeros(1), np.full(1, 200.0)])
    x = np.array([[[-5.0], [-4.0], [5.0]]])
    out = layer.forward(x, mask=np.array([[True, True, False]]))
    np.testing.assert_allclose(layer.attention_weights.sum(), 1.0, rtol=1e-6)
    assert np.isfinite(out).all() and layer.attention_weights[0, 2] == 0
