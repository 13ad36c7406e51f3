"""Losses and metrics: values against torch, gradients by finite differences in float64."""
import numpy as np
import pytest
import torch

from lstmkit import losses, metrics
from oracle import grad_error, numerical_grad

rng = np.random.default_rng(0)


def check_grad(loss, y_pred, y_true, mask=None):
    loss.forward(y_pred, y_true, mask)
    analytic = loss.backward()
    numeric = numerical_grad(lambda: loss.forward(y_pred, y_true, mask), y_pred)
    assert analytic.shape == y_pred.shape
    assert grad_error(numeric, analytic) < 1e-7


@pytest.mark.parametrize("name", ["mse", "mae", "huber"])
@pytest.mark.parametrize("shape", [(4, 1), (3, 5, 2)])
def test_regression_gradients(name, shape):
    y_pred = rng.standard_normal(shape) * 2
    y_true = rng.standard_normal(shape)
    check_grad(losses.get(name), y_pred, y_true)


def test_regression_masked_gradient_and_value():
    y_pred, y_true = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    mask = rng.random((3, 4)) > 0.3
    mask[0, 0] = True
    loss = losses.MeanSquaredError()
    value = loss.forward(y_pred, y_true, mask)
    assert np.isclose(value, np.mean(((y_pred - y_true) ** 2)[mask]))
    check_grad(loss, y_pred, y_true, mask)


@pytest.mark.parametrize("name,torch_loss", [("mse", torch.nn.MSELoss()), ("mae", torch.nn.L1Loss()),
                                             ("huber", torch.nn.HuberLoss(delta=1.0))])
def test_regression_values_match_torch(name, torch_loss):
    y_pred, y_true = rng.standard_normal((6, 3)) * 2, rng.standard_normal((6, 3))
    ours = losses.get(name).forward(y_pred, y_true)
    assert np.isclose(ours, torch_loss(torch.tensor(y_pred), torch.tensor(y_true)).item(), rtol=1e-12)


def test_target_without_trailing_unit_axis():
    y_pred, y_true = rng.standard_normal((5, 1)), rng.standard_normal(5)
    assert np.isclose(losses.get("mse").forward(y_pred, y_true), np.mean((y_pred[:, 0] - y_true) ** 2))


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 6)])
def test_sparse_crossentropy_from_logits(shape):
    logits = rng.standard_normal(shape) * 3
    labels = rng.integers(0, shape[-1], shape[:-1])
    loss = losses.SparseCategoricalCrossentropy()
    value = loss.forward(logits, labels)
    ref = torch.nn.CrossEntropyLoss()(torch.tensor(logits.reshape(-1, shape[-1])), torch.tensor(labels.reshape(-1)))
    assert np.isclose(value, ref.item(), rtol=1e-12)
    check_grad(loss, logits, labels)


def test_sparse_crossentropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0]])
    loss = losses.SparseCategoricalCrossentropy()
    assert np.isclose(loss.forward(logits, np.array([1])), 2000.0)
    assert np.all(np.isfinite(loss.backward()))


def test_sparse_crossentropy_on_probabilities_and_mask():
    logits = rng.standard_normal((2, 3, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 4, (2, 3))
    mask = np.array([[True, True, False], [True, False, False]])
    loss = losses.SparseCategoricalCrossentropy(from_logits=False)
    value = loss.forward(probs, labels, mask)
    ref = losses.SparseCategoricalCrossentropy().forward(logits, labels, mask)
    assert np.isclose(value, ref, rtol=1e-12)
    nll = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    assert np.isclose(value, nll[mask].mean())
    check_grad(loss, probs, labels, mask)


def test_categorical_crossentropy():
    logits = rng.standard_normal((4, 5))
    target = rng.random((4, 5))
    target /= target.sum(-1, keepdims=True)
    loss = losses.CategoricalCrossentropy()
    ref = torch.nn.CrossEntropyLoss()(torch.tensor(logits), torch.tensor(target))
    assert np.isclose(loss.forward(logits, target), ref.item(), rtol=1e-12)
    check_grad(loss, logits, target)


def test_bad_targets_say_what_was_expected():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        losses.get("sparse_categorical_crossentropy").forward(np.zeros((4, 3)), np.zeros((4, 2), int))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        losses.get("sparse_categorical_crossentropy").forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        losses.get("sparse_categorical_crossentropy").forward(np.zeros((2, 3)), np.array([0.5, 1]))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        losses.get("mse").forward(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge")


def test_metrics():
    logits = rng.standard_normal((3, 4, 5))
    labels = rng.integers(0, 5, (3, 4))
    acc = metrics.get("accuracy")
    acc.update(logits[:2], labels[:2])
    acc.update(logits[2:], labels[2:])
    assert np.isclose(acc.result(), np.mean(logits.argmax(-1) == labels))
    ppl = metrics.get("perplexity")
    ppl.update(logits, labels)
    assert np.isclose(ppl.result(), np.exp(losses.get("sparse_categorical_crossentropy").forward(logits, labels)))
    y, t = rng.standard_normal((6, 1)), rng.standard_normal(6)
    rmse, mae = metrics.get("rmse"), metrics.get("mae")
    for m in (rmse, mae):
        m.update(y[:4], t[:4])
        m.update(y[4:], t[4:])
    assert np.isclose(rmse.result(), np.sqrt(np.mean((y[:, 0] - t) ** 2)))
    assert np.isclose(mae.result(), np.mean(np.abs(y[:, 0] - t)))
    mae.reset()
    assert mae.result() == 0.0
