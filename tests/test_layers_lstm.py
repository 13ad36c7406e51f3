"""The LSTM layer: Keras's golden values from constant initialisers, statefulness, masks,
initialisers, and the errors a user sees (agreement with torch is in test_layers_recurrent.py)."""
import importlib.util

import numpy as np
import pytest

from lstmkit.layers import LAYERS, LSTM

IMPLS = ["reference", pytest.param("fast", marks=pytest.mark.skipif(
    importlib.util.find_spec("lstmkit.kernels.lstm") is None, reason="fast LSTM kernel not written yet"))]


def constant_lstm(units, I, forget_bias=1.0, impl="reference", **kw):
    """Keras's test layer: kernel 0.01, recurrent 0.02, bias 0.03 (forget block 1.0 by unit_forget_bias)."""
    layer = LSTM(units, impl=impl, **kw)
    layer.build((None, I), np.random.default_rng(0))
    b = np.full(4 * units, 0.03)
    b[units:2 * units] = forget_bias
    layer.set_weights([np.full((I, 4 * units), 0.01), np.full((units, 4 * units), 0.02), b])
    return layer


@pytest.mark.parametrize("impl", IMPLS)
def test_keras_golden_values(impl):
    seq = np.arange(72).reshape((3, 6, 4)).astype("float32")
    expected = np.repeat([[0.6288687], [0.86899155], [0.9460773]], 3, axis=1)
    np.testing.assert_allclose(constant_lstm(3, 4, impl=impl).forward(seq), expected, rtol=1e-5, atol=1e-5)
    # Keras with unit_forget_bias=False: the forget bias is 0.03 too
    expected = np.repeat([[0.57019705], [0.8661914], [0.9459622]], 3, axis=1)
    np.testing.assert_allclose(constant_lstm(3, 4, 0.03, impl=impl).forward(seq), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_keras_golden_stateful_and_initial_state(impl):
    seq = np.arange(24).reshape((2, 3, 4)).astype("float32")
    layer = constant_lstm(4, 4, stateful=True, impl=impl)
    for _ in range(2):
        layer.forward(seq)
        out = layer.forward(seq)
        np.testing.assert_allclose(out, [[0.3124785] * 4, [0.6863672] * 4], rtol=1e-5, atol=1e-5)
        layer.reset_states()
    seq = np.arange(24).reshape((2, 4, 3)).astype("float32")
    init = [np.arange(4).reshape((2, 2)).astype("float32")] * 2
    out = constant_lstm(2, 3, impl=impl).forward(seq, initial_state=init)
    np.testing.assert_allclose(out, [[0.20574439, 0.3558822], [0.64930826, 0.66276]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_keras_golden_masking(impl):
    seq = np.arange(24).reshape((2, 4, 3)).astype("float32")
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    a, b, c, d = 0.01588910, 0.05552048, 0.11755939, 0.28556206
    out = constant_lstm(2, 3, impl=impl).forward(seq, mask=mask)
    np.testing.assert_allclose(out, [[c, c], [d, d]], rtol=1e-5, atol=1e-5)
    carried = constant_lstm(2, 3, impl=impl, return_sequences=True).forward(seq, mask=mask)
    expected = np.array([[a, b, c, c], [0.14185596, d, d, d]])
    np.testing.assert_allclose(carried, np.repeat(expected[..., None], 2, -1), rtol=1e-5, atol=1e-5)
    zeroed = constant_lstm(2, 3, impl=impl, return_sequences=True, zero_output_for_mask=True).forward(seq, mask=mask)
    np.testing.assert_allclose(zeroed, np.repeat((expected * mask)[..., None], 2, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_stateful_calls_continue_one_sequence(impl):
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    whole = LSTM(4, return_sequences=True, impl=impl, dtype="float64")
    whole.build((None, 3), np.random.default_rng(1))
    parts = LSTM(4, return_sequences=True, stateful=True, impl=impl, dtype="float64")
    parts.build((None, 3), np.random.default_rng(1))
    y = np.concatenate([parts.forward(x[:, :2]), parts.forward(x[:, 2:])], axis=1)
    np.testing.assert_allclose(y, whole.forward(x), rtol=1e-12)
    parts.reset_states()
    np.testing.assert_allclose(parts.forward(x[:, :2]), y[:, :2], rtol=1e-12)
    with pytest.raises(ValueError, match="batch size 2"):
        parts.forward(x[:1, :2])


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_after_an_inference_forward_runs_it_again(impl):
    # Not training, the layer keeps nothing for backward (the kernels skip it); a backward then
    # runs the forward again from the same input and states: the gradients of a training forward.
    x = np.random.default_rng(0).standard_normal((3, 5, 2))
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])
    state = [np.full((3, 4), 0.5), np.full((3, 4), -0.25)]
    grads = {}
    for training in (True, False):
        layer = LSTM(4, return_sequences=True, stateful=True, impl=impl, dtype="float64")
        layer.build((None, 2), np.random.default_rng(1))
        layer.reset_states(state)
        out = layer.forward(x, training=training, mask=mask)
        assert (layer._cache is None) == (not training)
        dx = layer.backward(np.cos(out))
        grads[training] = [out, dx, *(layer.grads[name] for name in ("kernel", "recurrent_kernel", "bias")),
                           *layer.initial_state_grads]
    for trained, inferred in zip(grads[True], grads[False]):
        np.testing.assert_array_equal(inferred, trained)


def test_defaults_and_initialisers():
    layer = LSTM(5)
    assert layer.impl == "fast" and layer.dtype == np.float32
    layer.build((7, 3), np.random.default_rng(0))
    W, U, b = layer.get_weights()
    assert W.shape == (3, 20) and U.shape == (5, 20) and b.shape == (20,)
    assert W.dtype == np.float32
    assert np.abs(W).max() <= np.sqrt(6 / 23)
    np.testing.assert_allclose(U @ U.T, np.eye(5), atol=1e-5)     # orthogonal rows, as Keras's (H, 4H)
    assert not np.allclose(U[:, 5:10] @ U[:, 5:10].T, np.eye(5), atol=1e-2)   # not per gate block
    np.testing.assert_array_equal(b, np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    again = LSTM(5)
    again.build((7, 3), np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), again.get_weights()))


def test_mask_propagation_and_shapes():
    seqs = LSTM(4, return_sequences=True, return_state=True, impl="reference")
    last = LSTM(4, impl="reference")
    mask = np.ones((2, 3), bool)
    assert seqs.compute_mask(None, mask) is mask and last.compute_mask(None, mask) is None
    assert seqs.output_shape((3, 2)) == [(3, 4), (4,), (4,)] and last.output_shape((3, 2)) == (4,)


def test_config_round_trip_through_registry():
    layer = LSTM(4, return_sequences=True, stateful=True, dropout=0.25, impl="reference", name="enc", dtype="float64")
    config = layer.get_config()
    again = LAYERS["LSTM"](**config)
    assert again.get_config() == config


def test_errors_name_the_expected_shape():
    layer = LSTM(4, impl="reference")
    with pytest.raises(ValueError, match="not built"):
        layer.forward(np.zeros((1, 2, 3)))
    layer.build((None, 3), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(batch, time, 3\), got \(2, 3\)"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(batch, time, 3\), got \(2, 5, 4\)"):
        layer.forward(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="right padding"):
        layer.forward(np.zeros((2, 3, 3)), mask=np.array([[False, True, True], [True, True, True]]))
    with pytest.raises(ValueError, match=r"\(batch, time\) = \(2, 3\)"):
        layer.forward(np.zeros((2, 3, 3)), mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match=r"\(batch, units\) = \(2, 4\)"):
        layer.forward(np.zeros((2, 3, 3)), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"recurrent_kernel expects shape \(4, 16\), got \(16, 4\)"):
        layer.set_weights([np.zeros((3, 16)), np.zeros((16, 4)), np.zeros(16)])
    with pytest.raises(ValueError, match="expects 3 arrays"):
        layer.set_weights([np.zeros((3, 16))])
    with pytest.raises(ValueError, match="impl must be one of"):
        LSTM(4, impl="cuda")


def test_backward_checks_every_gradient_shape():
    layer = LSTM(4, return_state=True, impl="reference")
    layer.build((None, 3), np.random.default_rng(0))
    layer.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"gradient of c with shape \(2, 4\), got \(2, 5\)"):
        layer.backward([np.zeros((2, 4)), None, np.zeros((2, 5))])
    with pytest.raises(ValueError, match=r"gradient of output with shape \(2, 4\), got \(2, 5, 4\)"):
        layer.backward(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"gradients for \[output, h, c\], got 4 arrays"):
        layer.backward([None] * 4)
    assert layer.backward([None, np.ones((2, 4))]).shape == (2, 5, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_row_with_no_real_step_outputs_its_initial_state(impl):
    # Keras: a masked step outputs the previous output, and before any step that is the state;
    # a carried (stateful) or given state must not turn into zeros for a fully padded row
    layer = LSTM(3, return_sequences=True, impl=impl, dtype="float64")
    layer.build((None, 2), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, states = rng.standard_normal((2, 4, 2)), [rng.standard_normal((2, 3)) for _ in range(2)]
    mask = np.array([[True, True, False, False], [False, False, False, False]])
    seq = layer.forward(x, mask=mask, initial_state=states)
    np.testing.assert_array_equal(seq[1], np.repeat(states[0][1:], 4, axis=0))
    layer.return_sequences = False
    np.testing.assert_array_equal(layer.forward(x, mask=mask, initial_state=states), seq[:, -1])


def test_reset_states_checks_what_it_is_given():
    layer = LSTM(4, stateful=True, impl="reference")
    layer.build((None, 3), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"initial_state must be a list \[h, c\], got 1 arrays"):
        layer.reset_states([np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"\(batch, units\) = \(2, 4\), got \(2, 3\)"):
        layer.reset_states([np.zeros((2, 4)), np.zeros((2, 3))])
    layer.reset_states([np.ones((2, 4), np.float64), np.zeros((2, 4))])
    assert layer.states[0].dtype == np.float32 and layer.forward(np.zeros((2, 1, 3))).shape == (2, 4)
