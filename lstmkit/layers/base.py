"""The contract every layer keeps: parameters and their gradients by name, forward and backward.

A layer is built lazily from the shape of its first input (without the batch axis). `forward`
keeps what `backward` needs; `backward` takes dL/d(output), fills `self.grads` (same names and
shapes as `self.params`, written in place) and returns dL/d(input). Layers never print and never
read files.

Masks follow Keras: a (batch, time) bool array, True for real steps and False for padding. A
model calls, per layer, `out = layer.forward(x, training=training, mask=mask)` and then
`mask = layer.compute_mask(x, mask)`; in backward `d = layer.backward(d)` in reverse order.
"""
import re

import numpy as np


def snake_case(name):
    """'SimpleRNN' -> 'simple_rnn', 'LSTM' -> 'lstm' (Keras's default layer names)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Layer:
    def __init__(self, name=None, dtype="float32"):
        self.name = name or snake_case(type(self).__name__)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.params = {}     # name -> array, updated in place by optimizers
        self.grads = {}      # name -> array of the same shape, filled in place by backward
        self.built = False
        self.input_shape = None  # shape without the batch axis, set by build

    def build(self, input_shape, rng):
        """Create parameters for inputs of shape (batch, *input_shape) using rng (numpy Generator)."""
        self.input_shape = tuple(input_shape)
        self.built = True

    def output_shape(self, input_shape):
        """Shape of the output without the batch axis."""
        return tuple(input_shape)

    def forward(self, x, training=False, mask=None):
        """x (batch, *input_shape) -> output (batch, *output_shape). mask (batch, time) bool or None
        marks real (True) versus padded (False) time steps, as in Keras."""
        raise NotImplementedError

    def compute_mask(self, x, mask):
        """The mask for the next layer (Keras semantics): passed through unless a layer makes or drops it."""
        return mask

    def backward(self, dout):
        """dL/d(output) -> dL/d(input); fills self.grads."""
        raise NotImplementedError

    def reset_states(self):
        """Forget carried state (stateful recurrent layers); nothing to do for other layers."""

    def get_weights(self):
        """Parameters as a list of arrays, in the order Keras uses for this layer."""
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights):
        """Copy a list of arrays (the order of get_weights) into the parameters."""
        if not self.built:
            raise ValueError(f"{self.name} is not built yet: call build(input_shape, rng) before set_weights")
        names = list(self.params)
        if len(weights) != len(names):
            raise ValueError(f"{self.name} expects {len(names)} arrays ({', '.join(names)}), got {len(weights)}")
        for name, w in zip(names, weights):
            w = np.asarray(w)
            if w.shape != self.params[name].shape:
                raise ValueError(f"{self.name}.{name} expects shape {self.params[name].shape}, got {w.shape}")
        for name, w in zip(names, weights):
            self.params[name][...] = w

    def get_config(self):
        """Constructor arguments as JSON-able values; saving stores them to rebuild the layer."""
        return {"name": self.name, "dtype": self.dtype.name}

    # helpers for subclasses

    def add_param(self, name, value):
        """Register a parameter (cast to the layer's dtype) and its zero gradient."""
        self.params[name] = np.array(value, dtype=self.dtype, order="C")  # a fresh copy: plain strides
        self.grads[name] = np.zeros_like(self.params[name])

    def set_grad(self, name, value):
        """Write a gradient in place, so references held by an optimizer stay valid."""
        self.grads[name][...] = value

    def check_input(self, x, ndim, what):
        """Cast x to the layer's dtype after checking its rank, feature size (against the built input
        shape) and that it holds real numbers. ndim is the exact rank with batch (or None for any rank >= 2); what names the
        expected shape in the error, e.g. '(batch, time, features)'."""
        if not self.built:
            raise ValueError(f"{self.name} is not built yet: call build(input_shape, rng) first")
        x = np.asarray(x)
        features = self.input_shape[-1]
        expected = what.replace("features", str(features))
        if (ndim is not None and x.ndim != ndim) or x.ndim < 2 or x.shape[-1] != features:
            raise ValueError(f"{self.name} expects input of shape {expected}, got {x.shape}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{self.name} expects numbers of shape {expected}, got {x.dtype} values")
        return x.astype(self.dtype, copy=False)
