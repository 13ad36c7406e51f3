"""The reference GRU: one layer over a whole sequence, forward and backpropagation through time.

Plain NumPy, time-major, in PyTorch's formulation so torch.nn.GRU weights carry over one to one:

    x  (T, B, I)     inputs            W  (I, 3H)   input weights
    h0 (B, H)        initial hidden    U  (H, 3H)   recurrent weights
                                       b  (2, 3H)   b[0] = b_ih, b[1] = b_hh

Gate blocks along the 3H axis are ordered r, z, n (PyTorch's order). The two biases stay apart
because the reset gate multiplies the recurrent part of the candidate including its bias b_hn.
For one step t (Cho et al. 2014, as torch.nn.GRU computes it):

    r_t = sigmoid(x_t W_r + b_ir + h_{t-1} U_r + b_hr)          reset gate
    z_t = sigmoid(x_t W_z + b_iz + h_{t-1} U_z + b_hz)          update gate
    n_t = tanh   (x_t W_n + b_in + r_t * (h_{t-1} U_n + b_hn))  candidate
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}                       hidden state (and the output y_t)

Variable lengths follow PyTorch's packed sequences: past its length a sequence's h stays as it was
and its outputs are zero.
"""
import numpy as np

from lstmkit.cells.lstm import check_args, sigmoid, step_mask


def gru_forward(x, W, U, b, h0=None, lengths=None):
    """Run the GRU over x (T, B, I).

    Returns y (T, B, H) every hidden state, h_T (B, H), and the cache for backward.
    """
    T, B, _, H = check_args(x, W, U, b, h0, lengths, 3, lambda H: (2, 3 * H))
    dtype = x.dtype
    h = np.zeros((B, H), dtype) if h0 is None else np.asarray(h0, dtype)
    mask = step_mask(lengths, T, B, dtype)

    xw = (x.reshape(T * B, -1) @ W + b[0]).reshape(T, B, 3 * H)  # x_t W + b_ih for every t at once
    gates = np.empty((T, B, 3 * H), dtype)  # r, z, n after their nonlinearities
    hu_n = np.empty((T, B, H), dtype)       # h_{t-1} U_n + b_hn, the part the reset gate scales
    h_prev = np.empty((T, B, H), dtype)     # h_{t-1} as carried into step t
    y = np.empty((T, B, H), dtype)
    for t in range(T):
        h_prev[t] = h
        hu = h @ U + b[1]                                      # h_{t-1} U + b_hh, all three blocks
        r = sigmoid(xw[t, :, :H] + hu[:, :H])
        z = sigmoid(xw[t, :, H:2 * H] + hu[:, H:2 * H])
        hu_n[t] = hu[:, 2 * H:]
        n = np.tanh(xw[t, :, 2 * H:] + r * hu_n[t])            # n_t = tanh(.. + r_t * (h U_n + b_hn))
        h_new = (1 - z) * n + z * h                            # h_t = (1 - z_t) n_t + z_t h_{t-1}
        gates[t] = np.concatenate([r, z, n], axis=1)
        m = mask[t]
        y[t] = m * h_new
        h = m * h_new + (1 - m) * h                            # finished sequences keep their state
    cache = dict(x=x, W=W, U=U, gates=gates, hu_n=hu_n, h_prev=h_prev, mask=mask)
    return y, h, cache


def gru_backward(dy, dh_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, 3H), dU (H, 3H), db (2, 3H), dh0 (B, H).
    """
    x, W, U, gates = cache["x"], cache["W"], cache["U"], cache["gates"]
    hu_n, h_prev, mask = cache["hu_n"], cache["h_prev"], cache["mask"]
    T, B, H = h_prev.shape
    dh = np.zeros((B, H), x.dtype) if dh_T is None else np.array(dh_T, x.dtype)
    dxw = np.empty((T, B, 3 * H), x.dtype)  # gradient of x_t W + b_ih (pre-activations' input part)
    dhu = np.empty((T, B, 3 * H), x.dtype)  # gradient of h_{t-1} U + b_hh (their recurrent part)
    for t in reversed(range(T)):
        m = mask[t]
        r, z, n = (gates[t, :, k * H:(k + 1) * H] for k in range(3))
        dh_new = m * (dy[t] + dh)                          # h_t reached y_t and step t+1
        da_n = dh_new * (1 - z) * (1 - n ** 2)             # h_t = (1 - z) n + z h_{t-1}, n = tanh(a_n)
        da_z = dh_new * (h_prev[t] - n) * z * (1 - z)
        da_r = da_n * hu_n[t] * r * (1 - r)                # a_n = .. + r * (h U_n + b_hn)
        dxw[t, :, :H], dxw[t, :, H:2 * H], dxw[t, :, 2 * H:] = da_r, da_z, da_n
        dhu[t, :, :H], dhu[t, :, H:2 * H], dhu[t, :, 2 * H:] = da_r, da_z, da_n * r
        dh = dhu[t] @ U.T + dh_new * z + (1 - m) * dh     # to h_{t-1}: via U, directly via z, carried
    dxw2, dhu2 = dxw.reshape(T * B, 3 * H), dhu.reshape(T * B, 3 * H)
    dx = (dxw2 @ W.T).reshape(x.shape)
    dW = x.reshape(T * B, -1).T @ dxw2
    dU = h_prev.reshape(T * B, H).T @ dhu2
    db = np.stack([dxw2.sum(axis=0), dhu2.sum(axis=0)])
    return dx, dW, dU, db, dh


def gru_step(x, h, W, U, b):
    """One step for streaming inference: x (B, I), h (B, H) -> new h (B, H)."""
    H = U.shape[0]
    xw = x @ W + b[0]
    hu = h @ U + b[1]
    r = sigmoid(xw[:, :H] + hu[:, :H])
    z = sigmoid(xw[:, H:2 * H] + hu[:, H:2 * H])
    n = np.tanh(xw[:, 2 * H:] + r * hu[:, 2 * H:])
    return (1 - z) * n + z * h
