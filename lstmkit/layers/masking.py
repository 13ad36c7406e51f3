"""Masking: marks time steps whose features all equal mask_value as padding."""
import numpy as np

from lstmkit.layers.base import Layer


class Masking(Layer):
    """x (batch, time, features) -> x with padded steps zeroed, and the mask
    any(x != mask_value, axis=-1) (batch, time) for the layers after it (as Keras)."""

    def __init__(self, mask_value=0.0, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.mask_value = float(mask_value)

    def compute_mask(self, x, mask):
        """Compared in the layer's dtype, so the mask matches the steps forward zeroes."""
        return np.any(np.asarray(x, self.dtype) != self.dtype.type(self.mask_value), axis=-1)

    def forward(self, x, training=False, mask=None):
        """x (batch, time, features) -> same shape, padded steps zeroed."""
        x = self.check_input(x, 3, "(batch, time, features)")
        self._keep = self.compute_mask(x, None)[..., None].astype(self.dtype)
        return x * self._keep

    def backward(self, dout):
        """dout (batch, time, features) -> dx, zero at padded steps."""
        return np.asarray(dout, self.dtype) * self._keep

    def get_config(self):
        return {"mask_value": self.mask_value, **super().get_config()}
