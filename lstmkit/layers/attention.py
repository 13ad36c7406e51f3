"""Additive attention pooling: a learned weighted average of a sequence's hidden states."""
import numpy as np

from lstmkit.layers.base import Layer
from lstmkit.layers.initializers import glorot_uniform


class Attention(Layer):
    """h (batch, time, H) -> (batch, H):

        e_t     = v . tanh(h_t W + b)          score of step t     W (H, units), b (units,), v (units,)
        alpha_t = softmax_t(e) over the real steps (mask True); padded steps get weight 0
        out     = sum_t alpha_t h_t

    units defaults to H. Weights in get_weights() order: kernel W (Glorot-uniform), bias b (zero),
    context v (Glorot-uniform). After forward, `attention_weights` holds alpha (batch, time).
    The time axis is pooled away, so the mask stops here.
    """

    def __init__(self, units=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        if units is not None and int(units) < 1:
            raise ValueError(f"units must be a positive integer or None, got {units!r}")
        self.units = None if units is None else int(units)

    def build(self, input_shape, rng):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name} expects input_shape (time, features), got {tuple(input_shape)}")
        super().build(input_shape, rng)
        H = input_shape[-1]
        A = self.units or H
        self.add_param("kernel", glorot_uniform(rng, (H, A)))
        self.add_param("bias", np.zeros(A))
        self.add_param("context", glorot_uniform(rng, (A, 1)).ravel())

    def output_shape(self, input_shape):
        return (input_shape[-1],)

    def compute_mask(self, x, mask):
        return None

    def forward(self, x, training=False, mask=None):
        """x (batch, time, H), mask (batch, time) bool or None -> (batch, H)."""
        x = self.check_input(x, 3, "(batch, time, features)")
        B, T, _ = x.shape
        valid = np.ones((B, T), bool) if mask is None else np.asarray(mask, bool)
        if valid.shape != (B, T):
            raise ValueError(f"mask must have shape (batch, time) = ({B}, {T}), got {valid.shape}")
        u = np.tanh(x @ self.params["kernel"] + self.params["bias"])    # (B, T, A)
        e = np.where(valid, u @ self.params["context"], -np.inf)        # (B, T) scores
        top = e.max(axis=1, keepdims=True)
        w = np.where(valid, np.exp(e - np.where(np.isfinite(top), top, 0)), 0)
        total = w.sum(axis=1, keepdims=True)
        alpha = w / np.where(total > 0, total, 1)                        # all-padded rows: zeros
        self._x, self._u, self.attention_weights = x, u, alpha
        return np.einsum("bt,bth->bh", alpha, x)

    def backward(self, dout):
        """dout (batch, H) -> dx (batch, time, H)."""
        x, u, alpha = self._x, self._u, self.attention_weights
        dout = np.asarray(dout, self.dtype)
        dalpha = np.einsum("bh,bth->bt", dout, x)
        de = alpha * (dalpha - (alpha * dalpha).sum(axis=1, keepdims=True))   # through the softmax
        v, W = self.params["context"], self.params["kernel"]
        da = de[:, :, None] * v * (1 - u * u)                                  # through tanh, (B, T, A)
        A = da.shape[-1]
        self.set_grad("context", np.einsum("bt,bta->a", de, u))
        self.set_grad("kernel", x.reshape(-1, x.shape[-1]).T @ da.reshape(-1, A))
        self.set_grad("bias", da.sum(axis=(0, 1)))
        return alpha[:, :, None] * dout[:, None, :] + da @ W.T

    def get_config(self):
        return {"units": self.units, **super().get_config()}
