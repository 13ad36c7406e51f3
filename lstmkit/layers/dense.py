"""Dense: y = activation(x @ kernel + bias) on the last axis, for (B, F) or (B, T, F) inputs."""
import numpy as np

from lstmkit.layers import activations
from lstmkit.layers.base import Layer
from lstmkit.layers.initializers import glorot_uniform


class Dense(Layer):
    """Fully connected layer. kernel (F, units) Glorot-uniform, bias (units,) zero.
    Works on any input (batch, ..., F) -> (batch, ..., units); a mask passes through."""

    def __init__(self, units, activation=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        if int(units) < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = activations.check(activation)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.add_param("kernel", glorot_uniform(rng, (input_shape[-1], self.units)))
        self.add_param("bias", np.zeros(self.units))

    def output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False, mask=None):
        """x (batch, ..., F) -> (batch, ..., units)."""
        x = self.check_input(x, None, "(batch, ..., features)")
        self._x = x
        z = x.reshape(-1, x.shape[-1]) @ self.params["kernel"] + self.params["bias"]   # one gemm for (B, T, F)
        self._y = activations.apply(self.activation, z.reshape(x.shape[:-1] + (self.units,)))
        return self._y

    def backward(self, dout):
        """dout (batch, ..., units) -> dx (batch, ..., F)."""
        dz = activations.backward(self.activation, self._y, np.asarray(dout, self.dtype))
        dz2 = dz.reshape(-1, self.units)
        self.set_grad("kernel", self._x.reshape(-1, self._x.shape[-1]).T @ dz2)
        self.set_grad("bias", dz2.sum(axis=0))
        return (dz2 @ self.params["kernel"].T).reshape(dz.shape[:-1] + (self._x.shape[-1],))

    def get_config(self):
        return {"units": self.units, "activation": self.activation, **super().get_config()}
