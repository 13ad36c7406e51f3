"""Bidirectional: a recurrent layer run forwards and a copy run over each sequence reversed."""
import numpy as np

from lstmkit.layers.base import Layer
from lstmkit.layers.recurrent import Recurrent, mask_lengths

MERGE_MODES = ("concat", "sum", "ave", "mul")


def reverse_index(lengths, batch, time):
    """(batch, time) index that reverses each sequence's real prefix and leaves padding in place."""
    t = np.arange(time)[None, :]
    lengths = np.full((batch, 1), time) if lengths is None else np.asarray(lengths)[:, None]
    return np.where(t < lengths, lengths - 1 - t, t)


def reverse(x, index):
    """x (batch, time, ...) reordered along time by reverse_index (its own inverse)."""
    return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class Bidirectional(Layer):
    """Wraps a recurrent layer (LSTM, GRU, SimpleRNN): the layer reads each sequence forwards, a
    fresh copy of it reads the real part of each sequence backwards (padding per the mask stays at
    the end), and their outputs merge by merge_mode: "concat" (last axis doubles), "sum", "ave"
    or "mul". With return_sequences both are aligned to the original time steps, and padded steps
    output zero. With return_state forward returns [output, *forward states, *backward states]
    and backward takes a list of the same length. initial_state is a list in the same order
    ([*forward states, *backward states], each (batch, units), as in Keras); after backward
    `initial_state_grads` holds dL/d(initial state) in that order.

    Weights: the forward layer's, then the backward layer's (params named forward_*, backward_*).
    `layer` may also be a saved config {"class_name": ..., "config": ...}.
    """

    def __init__(self, layer, merge_mode="concat", name=None):
        if isinstance(layer, dict):
            from lstmkit.layers import LAYERS
            layer = LAYERS[layer["class_name"]](**layer["config"])
        if not isinstance(layer, Recurrent):
            raise ValueError("Bidirectional wraps a recurrent layer (LSTM, GRU, SimpleRNN), "
                             f"got {type(layer).__name__}")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        super().__init__(name, layer.dtype.name)
        self.merge_mode = merge_mode
        layer.zero_output_for_mask = True  # as Keras: padded steps must not carry reversed values
        config = layer.get_config()
        self.forward_layer = layer
        self.backward_layer = type(layer)(**{**config, "name": "backward_" + config["name"]})
        self.return_sequences, self.return_state = layer.return_sequences, layer.return_state
        self.initial_state_grads = None   # dL/d(initial states) after backward

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        for prefix, layer in (("forward_", self.forward_layer), ("backward_", self.backward_layer)):
            layer.build(input_shape, rng)
            for k in layer.params:   # the same arrays: optimizers and backward update them in place
                self.params[prefix + k] = layer.params[k]
                self.grads[prefix + k] = layer.grads[k]

    def output_shape(self, input_shape):
        shapes = self.forward_layer.output_shape(input_shape)
        out = shapes[0] if self.return_state else shapes
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (2 * out[-1],)
        if self.return_state:
            return [out] + shapes[1:] * 2
        return out

    def compute_mask(self, x, mask):
        return mask if self.return_sequences else None

    def reset_states(self):
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    def forward(self, x, training=False, mask=None, initial_state=None):
        """x (batch, time, features) -> merged output (see the class docstring)."""
        x = self.check_input(x, 3, "(batch, time, features)")
        B, T, _ = x.shape
        self._index = reverse_index(mask_lengths(mask, B, T), B, T)
        f_init, b_init = self._split_states(initial_state)
        fwd = self.forward_layer.forward(x, training=training, mask=mask, initial_state=f_init)
        bwd = self.backward_layer.forward(reverse(x, self._index), training=training, mask=mask, initial_state=b_init)
        fwd, f_states = (fwd[0], fwd[1:]) if self.return_state else (fwd, [])
        bwd, b_states = (bwd[0], bwd[1:]) if self.return_state else (bwd, [])
        if self.return_sequences:
            bwd = reverse(bwd, self._index)
        self._parts = (fwd, bwd)
        if self.merge_mode == "concat":
            out = np.concatenate([fwd, bwd], axis=-1)
        elif self.merge_mode == "sum":
            out = fwd + bwd
        elif self.merge_mode == "ave":
            out = (fwd + bwd) / 2
        else:
            out = fwd * bwd
        self._out_shape = out.shape
        return [out, *f_states, *b_states] if self.return_state else out

    def _split_states(self, initial_state):
        """[*forward states, *backward states] -> (forward's, backward's), or (None, None)."""
        if initial_state is None:
            return None, None
        names = self.forward_layer.state_names
        if isinstance(initial_state, np.ndarray) or len(initial_state) != 2 * len(names):
            got = "an array" if isinstance(initial_state, np.ndarray) else f"{len(initial_state)} arrays"
            raise ValueError(f"{self.name} initial_state must be a list of {2 * len(names)} arrays [forward "
                             f"{', '.join(names)}, backward {', '.join(names)}], got {got}")
        return list(initial_state[:len(names)]), list(initial_state[len(names):])

    def backward(self, dout):
        """dL/d(output) (a list [doutput, *dstates] with return_state, None for zero) -> dL/dx
        (batch, time, features)."""
        n = len(self.forward_layer.state_names)
        douts = list(dout) if self.return_state else [dout]
        douts += [None] * (1 + 2 * n - len(douts))
        d = np.zeros(self._out_shape, self.dtype) if douts[0] is None else np.asarray(douts[0], self.dtype)
        if d.shape != self._out_shape:
            raise ValueError(f"{self.name} backward expects a gradient of shape {self._out_shape}, got {d.shape}")
        fwd, bwd = self._parts
        if self.merge_mode == "concat":
            d_f, d_b = d[..., :fwd.shape[-1]], d[..., fwd.shape[-1]:]
        elif self.merge_mode == "sum":
            d_f = d_b = d
        elif self.merge_mode == "ave":
            d_f = d_b = d / 2
        else:
            d_f, d_b = d * bwd, d * fwd
        if self.return_sequences:
            d_b = reverse(d_b, self._index)
        if self.return_state:
            d_f, d_b = [d_f, *douts[1:1 + n]], [d_b, *douts[1 + n:]]
        dx = self.forward_layer.backward(d_f) + reverse(self.backward_layer.backward(d_b), self._index)
        self.initial_state_grads = [*self.forward_layer.initial_state_grads, *self.backward_layer.initial_state_grads]
        return dx

    def get_config(self):
        return {"layer": {"class_name": type(self.forward_layer).__name__, "config": self.forward_layer.get_config()},
                "merge_mode": self.merge_mode, "name": self.name}
