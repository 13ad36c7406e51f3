"""What LSTM, GRU and SimpleRNN layers share: batch-first inputs, masks, states, dropout, outputs.

A subclass says how many weight blocks a unit has (`gates`), which states it carries
(`state_names`), its initial bias, and which cell runs forward and backward time-major.
This class does the rest, as Keras does:

- inputs x (batch, time, features), transposed to time-major for the cell;
- mask (batch, time) bool -> lengths; only right padding (True... then False...) is accepted.
  Past its length a sequence's state is frozen; the last output is the state at the last real
  step (the initial state for a row with none). With return_sequences the outputs at padded steps
  repeat that (Keras's default) or, with zero_output_for_mask=True, are zero (PyTorch's packed
  sequences);
- dropout: inverted dropout on the inputs with one mask per sequence shared by all time steps;
- initial_state [h0] or [h0, c0], each (batch, units); after backward `initial_state_grads`
  holds dL/d(initial state) in the same order;
- return_sequences: output (batch, time, units) instead of the last output (batch, units);
- return_state: forward returns [output, *final states] and backward takes a list of the same
  length (None for a gradient that is zero);
- stateful: the final states become the next call's initial states, detached (truncated BPTT);
  reset_states() forgets them.
"""
import numpy as np

from lstmkit.kernels import kernel_ops
from lstmkit.layers.base import Layer
from lstmkit.layers.initializers import glorot_uniform, orthogonal


def mask_lengths(mask, batch, time):
    """Sequence lengths (batch,) from a right-padded (batch, time) bool mask; None if nothing is padded."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (batch, time):
        raise ValueError(f"mask must have shape (batch, time) = ({batch}, {time}), got {mask.shape}")
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(time)[None, :] < lengths[:, None]):
        raise ValueError("mask must be right padding: each row True for its real steps, then False "
                         "(pad sequences at the end, not at the start or in the middle)")
    return None if lengths.min() == time else lengths.astype(np.int64)


class Recurrent(Layer):
    """Base of the recurrent layers: x (batch, time, features) -> (batch, units), or
    (batch, time, units) with return_sequences; see the module docstring for the options."""
    gates = 1              # weight blocks per unit: kernel is (features, gates * units)
    state_names = ("h",)   # the states carried from step to step, each (batch, units)
    impls = ("reference",)  # kernel implementations available, the default first

    def __init__(self, units, return_sequences=False, return_state=False, stateful=False,
                 dropout=0.0, zero_output_for_mask=False, impl=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        if int(units) < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.dropout = float(dropout)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.impl = self.impls[0] if impl is None else impl
        if self.impl not in self.impls:
            raise ValueError(f"impl must be one of {self.impls}, got {impl!r}")
        self.states = None               # carried final states when stateful
        self.initial_state_grads = None  # dL/d(initial states) after backward

    # what a subclass provides: its cell's name (the functions <cell>_forward, <cell>_backward of
    # lstmkit.cells.<cell> and, for impl "fast", of lstmkit.kernels.<cell>) and, for more than one
    # state, its own run_forward and run_backward

    cell = None   # "lstm", "gru" or "rnn"

    def ops(self):
        """The kernel module for self.cell and self.impl."""
        try:
            return kernel_ops(self.cell, self.impl)
        except ModuleNotFoundError as err:
            if err.name != f"lstmkit.kernels.{self.cell}":
                raise
            raise ValueError(f"the fast {self.cell} kernel (lstmkit.kernels.{self.cell}) is not available: "
                             "use impl='reference'") from None

    def initial_bias(self):
        """The bias before training."""
        return np.zeros(self.gates * self.units)

    def run_forward(self, x, states, lengths, keep_cache):
        """Time-major x (T, B, I), states list of (B, H) -> y (T, B, H), final states list, cache.
        keep_cache False (not training): a kernel may keep nothing for backward and give None
        (the LSTM's does; the GRU's and RNN's always keep it)."""
        p = self.params
        ops = self.ops()
        forward = getattr(ops, f"{self.cell}_forward")
        y, h, cache = forward(x, p["kernel"], p["recurrent_kernel"], p["bias"], states[0], lengths=lengths)
        return y, [h], (ops, cache)

    def run_backward(self, dy, dstates, cache):
        """dy (T, B, H), dL/d(final states) list -> dx (T, B, I), [dkernel, drecurrent, dbias],
        dL/d(initial states) list."""
        ops, cache = cache
        dx, dW, dU, db, dh0 = getattr(ops, f"{self.cell}_backward")(dy, dstates[0], cache)
        return dx, [dW, dU, db], [dh0]

    # the shared plumbing

    def build(self, input_shape, rng):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name} expects input_shape (time, features), got {tuple(input_shape)}")
        super().build(input_shape, rng)
        self.rng = rng
        width = self.gates * self.units
        self.add_param("kernel", glorot_uniform(rng, (input_shape[-1], width)))
        self.add_param("recurrent_kernel", orthogonal(rng, (self.units, width)))
        self.add_param("bias", self.initial_bias())

    def output_shape(self, input_shape):
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * len(self.state_names)
        return out

    def compute_mask(self, x, mask):
        return mask if self.return_sequences else None

    def reset_states(self, states=None):
        """Forget the carried states (next call starts from zeros), or set them to a list of (B, H)."""
        if states is not None:
            first = states if isinstance(states, np.ndarray) and len(self.state_names) == 1 else states[0]
            states = self.start_states(states, len(first))
        self.states = states

    def start_states(self, initial_state, batch):
        """The states to start from: given, carried (stateful) or zeros."""
        n, shape = len(self.state_names), (batch, self.units)
        names = ", ".join(self.state_names)
        if initial_state is None and self.stateful and self.states is not None:
            if self.states[0].shape != shape:
                raise ValueError(f"stateful {self.name} carries states for batch size {self.states[0].shape[0]}, "
                                 f"got a batch of {batch}: keep the batch size fixed or call reset_states()")
            return self.states
        if initial_state is None:
            return [np.zeros(shape, self.dtype) for _ in range(n)]
        if isinstance(initial_state, np.ndarray) and n == 1:
            initial_state = [initial_state]
        if len(initial_state) != n:
            raise ValueError(f"{self.name} initial_state must be a list [{names}], got {len(initial_state)} arrays")
        states = [np.array(s, self.dtype) for s in initial_state]
        for s in states:
            if s.shape != shape:
                raise ValueError(f"{self.name} initial states must have shape (batch, units) = {shape}, got {s.shape}")
        return states

    def forward(self, x, training=False, mask=None, initial_state=None):
        """x (batch, time, features) -> (batch, time, units) if return_sequences else (batch, units);
        with return_state, [output, *final states (batch, units)]."""
        x = self.check_input(x, 3, "(batch, time, features)")
        B, T, I = x.shape
        if T == 0:
            raise ValueError(f"{self.name} expects at least one time step, got input of shape {x.shape}")
        lengths = mask_lengths(mask, B, T)
        states = self.start_states(initial_state, B)
        self._drop = None
        if training and self.dropout > 0:
            keep = self.rng.random((B, 1, I)) >= self.dropout
            self._drop = (keep / (1.0 - self.dropout)).astype(self.dtype)
            x = x * self._drop
        # fresh time-major copies: kernels may read BLAS strides even from axes of length 1
        x = x.transpose(1, 0, 2).copy()
        y, finals, self._cache = self.run_forward(x, states, lengths, bool(training))
        self._replay = (x, states, lengths) if self._cache is None else None   # for a backward after all
        self._shape = (B, T)
        if self.stateful:
            self.states = [s.copy() for s in finals]
        # padded steps whose output repeats the final h (Keras; for an empty row, its initial h), or None
        self._carry = None
        if lengths is not None and not self.zero_output_for_mask:
            self._carry = np.arange(T)[None, :] >= lengths[:, None]
        if not self.return_sequences:
            out = finals[0].copy()
        elif self._carry is None:
            out = np.ascontiguousarray(y.transpose(1, 0, 2))
        else:
            out = np.where(self._carry[:, :, None], finals[0][:, None, :], y.transpose(1, 0, 2))
        if self.return_state:
            return [out] + [s.copy() for s in finals]
        return out

    def backward(self, dout):
        """dL/d(output) (or, with return_state, a list [doutput, *dstates], None for zero)
        -> dL/dx (batch, time, features). Fills grads and initial_state_grads."""
        n = len(self.state_names)
        douts = list(dout) if isinstance(dout, (list, tuple)) else [dout]
        names = ["output", *self.state_names] if self.return_state else ["output"]
        if len(douts) > len(names):
            raise ValueError(f"{self.name} backward expects gradients for [{', '.join(names)}], "
                             f"got {len(douts)} arrays")
        B, T = self._shape
        H = self.units
        shapes = [(B, T, H) if self.return_sequences else (B, H)] + [(B, H)] * n
        douts = [np.zeros(s, self.dtype) if d is None else np.asarray(d, self.dtype)
                 for d, s in zip(douts + [None] * (1 + n - len(douts)), shapes)]
        for name, d, s in zip(names, douts, shapes):
            if d.shape != s:
                raise ValueError(f"{self.name} backward expects the gradient of {name} with shape {s}, got {d.shape}")
        d, dstates = douts[0], [g.copy() for g in douts[1:]]
        if not self.return_sequences:
            dstates[0] += d                       # the output is the final h
            d = np.zeros((B, T, H), self.dtype)
        elif self._carry is not None:             # padded steps repeat the final h (the cell ignores dy there)
            dstates[0] += (d * self._carry[:, :, None]).sum(axis=1)
        dy = d.transpose(1, 0, 2).copy()
        if self._cache is None:      # a forward that was not training kept nothing: run it again, keeping it
            self._cache = self.run_forward(*self._replay, True)[2]
            self._replay = None
        dx, grads, self.initial_state_grads = self.run_backward(dy, dstates, self._cache)
        for name, g in zip(("kernel", "recurrent_kernel", "bias"), grads):
            self.set_grad(name, g)
        dx = dx.transpose(1, 0, 2)
        if self._drop is not None:
            dx = dx * self._drop
        return np.ascontiguousarray(dx)

    def get_config(self):
        return {"units": self.units, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "stateful": self.stateful,
                "dropout": self.dropout, "zero_output_for_mask": self.zero_output_for_mask,
                "impl": self.impl, **super().get_config()}
