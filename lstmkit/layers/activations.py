"""Activation functions by Keras name, each with its derivative written in terms of the output."""
import numpy as np

from lstmkit.cells.lstm import sigmoid

NAMES = ("linear", "relu", "tanh", "sigmoid", "softmax")


def check(name):
    """Normalise an activation name (None means linear); ValueError for unknown names."""
    name = "linear" if name is None else name
    if name not in NAMES:
        raise ValueError(f"activation must be one of {NAMES} or None, got {name!r}")
    return name


def apply(name, z):
    """y = activation(z); softmax is over the last axis."""
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return sigmoid(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def backward(name, y, dy):
    """dL/dz from the output y = activation(z) and dL/dy."""
    if name == "linear":
        return dy
    if name == "relu":
        return dy * (y > 0)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "sigmoid":
        return dy * y * (1 - y)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
