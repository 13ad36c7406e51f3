"""Dense, Embedding, Dropout and Masking: values worked out by hand, Keras behaviours, the
registry, and the errors a user sees."""
import numpy as np
import pytest

from lstmkit.layers import LAYERS, Dense, Dropout, Embedding, Layer, Masking


def built(layer, input_shape, seed=0):
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


@pytest.mark.parametrize("activation,expected", [
    (None, [3.1, 2.8]), ("linear", [3.1, 2.8]), ("relu", [3.1, 2.8]),
    ("sigmoid", [0.9568927450589139, 0.9426758241011313]),
    ("tanh", [0.9959493592219002, 0.992631520201128]),
    ("softmax", [0.574442516811659, 1 - 0.574442516811659])])
def test_dense_golden_values(activation, expected):
    # kernel 0.5 everywhere, bias [0.1, -0.2]: z = 0.5 * (1 + 2 + 3) + b = [3.1, 2.8]
    layer = built(Dense(2, activation=activation, dtype="float64"), (3,))
    layer.set_weights([np.full((3, 2), 0.5), np.array([0.1, -0.2])])
    np.testing.assert_allclose(layer.forward([[1.0, 2.0, 3.0]]), [expected], rtol=1e-12)


def test_dense_on_sequences_and_defaults():
    layer = built(Dense(4), (5, 3))
    assert layer.output_shape((5, 3)) == (5, 4)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 4) and kernel.dtype == np.float32 and np.all(bias == 0)
    assert np.abs(kernel).max() <= np.sqrt(6 / 7)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x)[1, 2], x[1, 2] @ kernel, rtol=1e-6)
    mask = np.ones((2, 5), bool)
    assert layer.compute_mask(x, mask) is mask


def test_embedding_lookup_and_mask_zero():
    layer = built(Embedding(5, 3, mask_zero=True), (4,))
    table = layer.get_weights()[0]
    assert table.shape == (5, 3) and np.abs(table).max() <= 0.05
    ids = np.array([[1, 4, 0, 0], [2, 2, 3, 0]])
    out = layer.forward(ids)
    assert out.shape == (2, 4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 2], table[3])
    np.testing.assert_array_equal(layer.compute_mask(ids, None), ids != 0)
    assert built(Embedding(5, 3), (4,)).compute_mask(ids, None) is None
    assert layer.output_shape((4,)) == (4, 3)
    assert layer.backward(np.ones((2, 4, 3))) is None
    np.testing.assert_array_equal(layer.grads["embeddings"][:, 0], [3, 1, 2, 1, 1])


def test_embedding_errors():
    layer = built(Embedding(5, 3), (4,))
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        layer.forward([[1, 5]])
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        layer.forward([[-1, 2]])
    with pytest.raises(ValueError, match="integer ids"):
        layer.forward([[0.5, 1.0]])
    np.testing.assert_array_equal(layer.forward(np.array([[1.0, 2.0]])), layer.forward([[1, 2]]))


def test_dropout_identity_unless_training_and_seeded():
    x = np.ones((4, 50), np.float32)
    a, b = built(Dropout(0.5), (50,), seed=3), built(Dropout(0.5), (50,), seed=3)
    assert a.forward(x) is not None and np.array_equal(a.forward(x), x)
    assert np.array_equal(a.backward(x), x)
    out = a.forward(x, training=True)
    np.testing.assert_array_equal(out, b.forward(x, training=True))
    assert set(np.unique(out)) == {0.0, 2.0}
    np.testing.assert_array_equal(a.backward(x), out)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        Dropout(1.0)


def test_masking_zeroes_padded_steps_and_ignores_incoming_mask():
    layer = built(Masking(mask_value=-1.0), (3, 2))
    x = np.array([[[1, 2], [-1, -1], [-1, 3]]], np.float32)
    np.testing.assert_array_equal(layer.compute_mask(x, np.zeros((1, 3), bool)), [[True, False, True]])
    np.testing.assert_array_equal(layer.forward(x), [[[1, 2], [0, 0], [-1, 3]]])
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        layer.forward(np.zeros((1, 2)))


def test_wrong_feature_size_names_the_expected_shape():
    layer = built(Dense(2), (3,))
    with pytest.raises(ValueError, match=r"dense expects input of shape \(batch, \.\.\., 3\), got \(4, 5\)"):
        layer.forward(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="got \\(4,\\)"):
        layer.forward(np.zeros(4))
    with pytest.raises(ValueError, match="activation must be one of"):
        Dense(2, activation="gelu")


def test_set_weights_checks_count_and_shapes_before_copying():
    layer = built(Dense(2), (3,))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"dense.bias expects shape \(2,\), got \(3,\)"):
        layer.set_weights([np.ones((3, 2)), np.ones(3)])
    assert all(np.array_equal(a, b) for a, b in zip(before, layer.get_weights()))
    with pytest.raises(ValueError, match=r"expects 2 arrays \(kernel, bias\), got 1"):
        layer.set_weights([np.ones((3, 2))])
    with pytest.raises(ValueError, match="not built"):
        Dense(2).set_weights([np.ones((3, 2)), np.ones(2)])


def test_registry_rebuilds_every_layer_from_its_config():
    import json
    for name, cls in LAYERS.items():
        assert issubclass(cls, Layer) and cls.__name__ == name
    examples = [Dense(3, activation="relu", name="head"), Dropout(0.2), Embedding(10, 4, mask_zero=True),
                Masking(-1.0)]
    for layer in examples:
        config = json.loads(json.dumps(layer.get_config()))
        assert LAYERS[type(layer).__name__](**config).get_config() == config


def test_masking_decides_in_the_layer_dtype():
    # 1e-50 is not zero in float64 but is in float32: the mask a model passes on (compute_mask on the
    # raw input) must agree with the steps forward zeroes, as Keras compares in the layer's dtype
    layer = built(Masking(), (2, 1))
    x = np.array([[[1.0], [1e-50]]])
    keep = layer.forward(x)[..., 0] != 0
    np.testing.assert_array_equal(layer.compute_mask(x, None), keep)
    np.testing.assert_array_equal(keep, [[True, False]])


@pytest.mark.parametrize("bad", [np.array([[["a", "b", "c"]]]), np.ones((1, 1, 3), complex),
                                 np.array([[[None, 1, 2]]], object)])
def test_non_numeric_input_names_the_expected_shape(bad):
    for layer in (built(Dense(2), (1, 3)), built(Masking(), (1, 3)), built(Dropout(0.5), (1, 3))):
        with pytest.raises(ValueError, match=r"expects numbers of shape \(batch, .*3\), got"):
            layer.forward(bad, training=True)


@pytest.mark.parametrize("bad", [[[np.nan, 1.0]], [[np.inf, 1.0]], [["a", "b"]], [[1 + 1j, 2]]])
def test_embedding_rejects_non_integer_ids_without_numpy_warnings(bad):
    import warnings
    layer = built(Embedding(5, 3), (2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"integer ids of shape \(batch, time\)"):
            layer.forward(np.array(bad))


def test_initialisers_draw_as_keras():
    from lstmkit.layers.initializers import embedding_uniform, glorot_uniform, orthogonal
    W = glorot_uniform(np.random.default_rng(0), (30, 50))
    limit = np.sqrt(6 / 80)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.99 * limit and abs(W.mean()) < 0.01
    E = embedding_uniform(np.random.default_rng(0), (30, 50))
    assert np.abs(E).max() <= 0.05 and np.abs(E).max() > 0.049
    for shape in [(3, 12), (4, 4), (6, 2)]:
        Q = orthogonal(np.random.default_rng(1), shape)
        assert Q.shape == shape
        small = min(shape)
        np.testing.assert_allclose(Q @ Q.T if shape[0] <= shape[1] else Q.T @ Q, np.eye(small), atol=1e-12)
        # Keras: Q from the QR of a standard normal (max, min) matrix, signs making diag(R) positive
        a = np.random.default_rng(1).standard_normal((max(shape), small))
        r = (Q if shape[0] >= shape[1] else Q.T).T @ a
        np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-12)
        assert np.all(np.diag(r) > 0)


def test_embedding_backward_overwrites_the_gradient():
    layer = built(Embedding(5, 3, dtype="float64"), (2,))
    layer.forward([[1, 2]])
    layer.backward(np.ones((1, 2, 3)))
    layer.forward([[2, 3]])
    layer.backward(np.ones((1, 2, 3)))
    np.testing.assert_array_equal(layer.grads["embeddings"][:, 0], [0, 0, 1, 1, 0])
