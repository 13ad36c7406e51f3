"""Embedding: integer token ids -> rows of a learned table."""
import numpy as np

from lstmkit.layers.base import Layer
from lstmkit.layers.initializers import embedding_uniform


class Embedding(Layer):
    """ids (batch, time) in [0, input_dim) -> vectors (batch, time, output_dim).

    embeddings (input_dim, output_dim) starts U(-0.05, 0.05) as in Keras. With mask_zero=True id 0
    is padding and the layer emits the mask ids != 0 (so input_dim must count the padding id).
    The gradient is sparse: only the rows that were looked up receive it (np.add.at).
    """

    def __init__(self, input_dim, output_dim, mask_zero=False, name=None, dtype="float32"):
        super().__init__(name, dtype)
        if int(input_dim) < 1 or int(output_dim) < 1:
            raise ValueError(f"input_dim and output_dim must be positive, got {input_dim!r}, {output_dim!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.add_param("embeddings", embedding_uniform(rng, (self.input_dim, self.output_dim)))

    def output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def ids(self, x):
        """x as an int64 array of valid ids; ValueError for anything but whole numbers in range."""
        if not self.built:
            raise ValueError(f"{self.name} is not built yet: call build(input_shape, rng) first")
        x = np.asarray(x)
        whole = x.dtype.kind in "biu" or (x.dtype.kind == "f" and np.all(np.isfinite(x) & (x == np.round(x))))
        if x.ndim < 1 or not whole:
            raise ValueError(f"{self.name} expects integer ids of shape (batch, time), got {x.dtype} "
                             f"values of shape {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.input_dim):
            raise ValueError(f"{self.name} ids must be in [0, {self.input_dim}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]: raise input_dim to the vocabulary size")
        return x.astype(np.int64)

    def forward(self, x, training=False, mask=None):
        """ids (batch, time) -> (batch, time, output_dim)."""
        self._ids = self.ids(x)
        return self.params["embeddings"][self._ids]

    def compute_mask(self, x, mask):
        """ids != 0 when mask_zero, else no mask (as Keras)."""
        return np.asarray(x) != 0 if self.mask_zero else None

    def backward(self, dout):
        """Accumulates the gradient of the looked-up rows; ids have no gradient, so returns None."""
        dout = np.asarray(dout, self.dtype)
        grad = self.grads["embeddings"]
        grad[...] = 0
        np.add.at(grad, self._ids.reshape(-1), dout.reshape(-1, self.output_dim))
        return None

    def get_config(self):
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero, **super().get_config()}
