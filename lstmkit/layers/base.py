"""The contract every layer keeps: parameters and their gradients by name, forward and backward.

A layer is built lazily from the shape of its first input (without the batch axis). `forward`
keeps what `backward` needs; `backward` takes dL/d(output), fills `self.grads` (same names and
shapes as `self.params`) and returns dL/d(input). Layers never print and never read files.
"""
import numpy as np


class Layer:
    def __init__(self, name=None):
        self.name = name or type(self).__name__.lower()
        self.params = {}     # name -> array, updated in place by optimizers
        self.grads = {}      # name -> array of the same shape, filled by backward
        self.built = False

    def build(self, input_shape, rng):
        """Create parameters for inputs of shape (batch, *input_shape) using rng (numpy Generator)."""
        self.built = True

    def output_shape(self, input_shape):
        """Shape of the output without the batch axis."""
        return input_shape

    def forward(self, x, training=False, mask=None):
        """x (batch, *input_shape) -> output (batch, *output_shape). mask (batch, time) bool or None
        marks real (True) versus padded (False) time steps, as in Keras."""
        raise NotImplementedError

    def compute_mask(self, x, mask):
        """The mask for the next layer (Keras semantics): passed through unless a layer makes or drops it."""
        return mask

    def backward(self, dout):
        raise NotImplementedError

    def get_weights(self):
        """Parameters as a list of arrays, in the order Keras uses for this layer."""
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights):
        names = list(self.params)
        if len(weights) != len(names):
            raise ValueError(f"{self.name} expects {len(names)} arrays ({', '.join(names)}), got {len(weights)}")
        for name, w in zip(names, weights):
            w = np.asarray(w)
            if w.shape != self.params[name].shape:
                raise ValueError(f"{self.name}.{name} has shape {self.params[name].shape}, got {w.shape}")
            self.params[name][...] = w

    def get_config(self):
        """Constructor arguments as JSON-able values; saving stores them to rebuild the layer."""
        return {"name": self.name}
