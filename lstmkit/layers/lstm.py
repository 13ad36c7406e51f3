"""The LSTM layer: Keras's LSTM on top of lstmkit's LSTM kernels (fast or reference)."""
import numpy as np

from lstmkit.layers.recurrent import Recurrent


class LSTM(Recurrent):
    """Long Short-Term Memory layer over (batch, time, features).

    Weights, in get_weights() order: kernel W (features, 4*units) Glorot-uniform, recurrent_kernel
    U (units, 4*units) orthogonal, bias b (4*units,) zero except the forget block = 1.0; gate
    blocks i, f, g, o. States are [h, c]. impl "fast" (compiled) or "reference" (plain NumPy).
    Options (return_sequences, return_state, stateful, dropout, masks): see layers.recurrent.
    """
    gates = 4
    state_names = ("h", "c")
    impls = ("fast", "reference")
    cell = "lstm"

    def initial_bias(self):
        b = np.zeros(4 * self.units)
        b[self.units:2 * self.units] = 1.0   # unit_forget_bias
        return b

    def run_forward(self, x, states, lengths, keep_cache):
        ops = self.ops()
        p = self.params
        y, (h, c), cache = ops.lstm_forward(x, p["kernel"], p["recurrent_kernel"], p["bias"],
                                            states[0], states[1], lengths=lengths, keep_cache=keep_cache)
        return y, [h, c], None if cache is None else (ops, cache)

    def run_backward(self, dy, dstates, cache):
        ops, cache = cache
        dx, dW, dU, db, dh0, dc0 = ops.lstm_backward(dy, dstates[0], dstates[1], cache)
        return dx, [dW, dU, db], [dh0, dc0]

