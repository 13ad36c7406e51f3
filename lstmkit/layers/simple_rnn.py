"""The SimpleRNN layer: Keras's SimpleRNN (tanh) on the reference RNN cell."""
from lstmkit.cells import rnn as cell
from lstmkit.layers.recurrent import Recurrent


class SimpleRNN(Recurrent):
    """Fully connected tanh recurrence h_t = tanh(x_t W + h_{t-1} U + b) over (batch, time, features).

    Weights, in get_weights() order: kernel W (features, units) Glorot-uniform, recurrent_kernel
    U (units, units) orthogonal, bias (units,) zero. The state is [h]. Options
    (return_sequences, return_state, stateful, dropout, masks): see layers.recurrent.
    """
    gates = 1

    def run_forward(self, x, states, lengths):
        p = self.params
        y, h, cache = cell.rnn_forward(x, p["kernel"], p["recurrent_kernel"], p["bias"], states[0], lengths=lengths)
        return y, [h], cache

    def run_backward(self, dy, dstates, cache):
        dx, dW, dU, db, dh0 = cell.rnn_backward(dy, dstates[0], cache)
        return dx, [dW, dU, db], [dh0]
