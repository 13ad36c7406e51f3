"""The reference LSTM: one layer over a whole sequence, forward and backpropagation through time.

Plain NumPy, written to be read beside the equations. Shapes are time-major inside:

    x  (T, B, I)     inputs            W  (I, 4H)   input weights
    h0 (B, H)        initial hidden    U  (H, 4H)   recurrent weights
    c0 (B, H)        initial cell      b  (4H,)     bias (PyTorch's b_ih + b_hh)

Gate blocks along the 4H axis are ordered i, f, g, o (g is the candidate C~), as in PyTorch and
Keras. The articles write the pre-activation as W·[h_{t-1}, x_t] + b; stacking [W; U] gives the
same thing, and keeping W and U apart lets the input projection of all steps be one product.

For one step t (the standard LSTM with a forget gate, Gers et al. 2000):

    i_t  = sigmoid(x_t W_i + h_{t-1} U_i + b_i)      input gate:  how much new to write
    f_t  = sigmoid(x_t W_f + h_{t-1} U_f + b_f)      forget gate: how much old cell to keep
    g_t  = tanh   (x_t W_g + h_{t-1} U_g + b_g)      candidate C~_t
    o_t  = sigmoid(x_t W_o + h_{t-1} U_o + b_o)      output gate: how much cell to show
    c_t  = f_t * c_{t-1} + i_t * g_t                 cell state C_t
    h_t  = o_t * tanh(c_t)                           hidden state (and the output y_t)

Variable lengths follow PyTorch's packed sequences: past its length a sequence's h and c stay as
they were and its outputs are zero.
"""
import numpy as np


def sigmoid(z):
    """Logistic function, stable for large |z|."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def step_mask(lengths, T, B, dtype):
    """(T, B, 1) mask, 1 where step t is inside sequence b, from lengths (B,) or None (all ones)."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=dtype)
    lengths = np.asarray(lengths)
    return (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)[:, :, None]


def check_args(x, W, U, b, h0, lengths, gates, b_shape):
    """Raise ValueError unless x (T, B, I), W (I, gates*H), U (H, gates*H), b b_shape, h0 (B, H)
    and lengths (B,) in [0, T] fit together. Returns (T, B, I, H)."""
    if np.ndim(x) != 3:
        raise ValueError(f"x must be time-major (T, B, I), got shape {np.shape(x)}")
    T, B, I = x.shape
    if np.ndim(U) != 2 or U.shape[1] != gates * U.shape[0]:
        raise ValueError(f"U must be (H, {gates}*H), got shape {np.shape(U)}")
    H = U.shape[0]
    if np.shape(W) != (I, gates * H):
        raise ValueError(f"W must be (I, {gates}*H) = {(I, gates * H)} for inputs with I={I} "
                         f"and H={H}, got shape {np.shape(W)}")
    if np.shape(b) != b_shape(H):
        raise ValueError(f"b must have shape {b_shape(H)}, got {np.shape(b)}")
    if h0 is not None and np.shape(h0) != (B, H):
        raise ValueError(f"h0 must be (B, H) = {(B, H)}, got shape {np.shape(h0)}")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (B,) or np.any(lengths < 0) or np.any(lengths > T):
            raise ValueError(f"lengths must be {B} integers between 0 and T={T}, got {lengths.tolist()}")
    return T, B, I, H


def lstm_forward(x, W, U, b, h0=None, c0=None, lengths=None, keep_cache=True):
    """Run the LSTM over x (T, B, I).

    Returns y (T, B, H) every hidden state, (h_T, c_T) each (B, H), and the cache for backward
    (None where keep_cache is False: inference, as in the fast kernel).
    """
    T, B, _, H = check_args(x, W, U, b, h0, lengths, 4, lambda H: (4 * H,))
    if c0 is not None and np.shape(c0) != (B, H):
        raise ValueError(f"c0 must be (B, H) = {(B, H)}, got shape {np.shape(c0)}")
    dtype = x.dtype
    h = np.zeros((B, H), dtype) if h0 is None else np.asarray(h0, dtype)
    c = np.zeros((B, H), dtype) if c0 is None else np.asarray(c0, dtype)
    mask = step_mask(lengths, T, B, dtype)

    xw = (x.reshape(T * B, -1) @ W + b).reshape(T, B, 4 * H)  # x_t W + b for every t at once
    gates = np.empty((T, B, 4 * H), dtype)   # i, f, g, o after their nonlinearities
    h_prev = np.empty((T, B, H), dtype)      # h_{t-1} as carried into step t
    c_prev = np.empty((T, B, H), dtype)      # c_{t-1} as carried into step t
    tanh_c = np.empty((T, B, H), dtype)      # tanh(c_t) of the step's new cell
    y = np.empty((T, B, H), dtype)
    for t in range(T):
        h_prev[t], c_prev[t] = h, c
        z = xw[t] + h @ U
        i = sigmoid(z[:, 0 * H:1 * H])
        f = sigmoid(z[:, 1 * H:2 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        o = sigmoid(z[:, 3 * H:4 * H])
        c_new = f * c + i * g                 # C_t = f_t * C_{t-1} + i_t * C~_t
        tanh_c[t] = np.tanh(c_new)
        h_new = o * tanh_c[t]                 # h_t = o_t * tanh(C_t)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        m = mask[t]
        y[t] = m * h_new
        h = m * h_new + (1 - m) * h           # finished sequences keep their state
        c = m * c_new + (1 - m) * c
    if not keep_cache:
        return y, (h, c), None
    cache = dict(x=x, W=W, U=U, gates=gates, h_prev=h_prev, c_prev=c_prev, tanh_c=tanh_c, mask=mask)
    return y, (h, c), cache


def lstm_backward(dy, dh_T, dc_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T, dc_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, 4H), dU (H, 4H), db (4H,), dh0 (B, H), dc0 (B, H).
    """
    x, W, U, gates = cache["x"], cache["W"], cache["U"], cache["gates"]
    h_prev, c_prev, tanh_c, mask = cache["h_prev"], cache["c_prev"], cache["tanh_c"], cache["mask"]
    T, B, H = tanh_c.shape
    dh = np.zeros((B, H), x.dtype) if dh_T is None else np.array(dh_T, x.dtype)
    dc = np.zeros((B, H), x.dtype) if dc_T is None else np.array(dc_T, x.dtype)
    dz = np.empty((T, B, 4 * H), x.dtype)  # gradient of the gate pre-activations
    for t in reversed(range(T)):
        m = mask[t]
        i, f, g, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dh_new = m * (dy[t] + dh)                           # h_t reached y_t and step t+1
        dc_new = m * dc + dh_new * o * (1 - tanh_c[t] ** 2)  # through h_t = o * tanh(C_t)
        dz[t, :, 0 * H:1 * H] = dc_new * g * i * (1 - i)     # C_t = f C_{t-1} + i C~_t
        dz[t, :, 1 * H:2 * H] = dc_new * c_prev[t] * f * (1 - f)
        dz[t, :, 2 * H:3 * H] = dc_new * i * (1 - g ** 2)
        dz[t, :, 3 * H:4 * H] = dh_new * tanh_c[t] * o * (1 - o)
        dh = dz[t] @ U.T + (1 - m) * dh                      # to h_{t-1}, plus the carried state
        dc = dc_new * f + (1 - m) * dc
    dz2 = dz.reshape(T * B, 4 * H)
    dx = (dz2 @ W.T).reshape(x.shape)
    dW = x.reshape(T * B, -1).T @ dz2
    dU = h_prev.reshape(T * B, H).T @ dz2
    db = dz2.sum(axis=0)
    return dx, dW, dU, db, dh, dc


def lstm_step(x, h, c, W, U, b):
    """One step for streaming inference: x (B, I), h and c (B, H) -> new (h, c)."""
    H = U.shape[0]
    z = x @ W + h @ U + b
    i = sigmoid(z[:, :H])
    f = sigmoid(z[:, H:2 * H])
    g = np.tanh(z[:, 2 * H:3 * H])
    o = sigmoid(z[:, 3 * H:])
    c = f * c + i * g
    return o * np.tanh(c), c
