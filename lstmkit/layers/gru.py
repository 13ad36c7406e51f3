"""The GRU layer: Keras's GRU (reset_after=True) on lstmkit's GRU kernels (fast or reference), in
PyTorch's layout."""
import numpy as np

from lstmkit.layers.recurrent import Recurrent


class GRU(Recurrent):
    """Gated recurrent unit layer over (batch, time, features).

    Weights, in get_weights() order: kernel W (features, 3*units) Glorot-uniform, recurrent_kernel
    U (units, 3*units) orthogonal, bias (2, 3*units) zero = [b_ih; b_hh]. Gate blocks r, z, n as
    torch.nn.GRU (Keras orders them z, r, h; the equations are those of Keras's reset_after=True).
    The state is [h]. impl "fast" (compiled) or "reference" (plain NumPy). Options
    (return_sequences, return_state, stateful, dropout, masks): see layers.recurrent.
    """
    gates = 3
    impls = ("fast", "reference")
    cell = "gru"

    def initial_bias(self):
        return np.zeros((2, 3 * self.units))
