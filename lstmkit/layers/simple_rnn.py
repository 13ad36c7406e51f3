"""The SimpleRNN layer: Keras's SimpleRNN (tanh) on lstmkit's tanh RNN kernels (fast or reference)."""
from lstmkit.layers.recurrent import Recurrent


class SimpleRNN(Recurrent):
    """Fully connected tanh recurrence h_t = tanh(x_t W + h_{t-1} U + b) over (batch, time, features).

    Weights, in get_weights() order: kernel W (features, units) Glorot-uniform, recurrent_kernel
    U (units, units) orthogonal, bias (units,) zero. The state is [h]. impl "fast" (compiled) or
    "reference" (plain NumPy). Options (return_sequences, return_state, stateful, dropout, masks):
    see layers.recurrent.
    """
    gates = 1
    impls = ("fast", "reference")
    cell = "rnn"
