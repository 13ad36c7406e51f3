"""The reference tanh RNN (Elman): one layer over a whole sequence, forward and backpropagation
through time.

Plain NumPy, time-major, in the same layout as lstm.py:

    x  (T, B, I)     inputs            W  (I, H)    input weights
    h0 (B, H)        initial hidden    U  (H, H)    recurrent weights
                                       b  (H,)      bias (PyTorch's b_ih + b_hh)

For one step t (torch.nn.RNN with nonlinearity="tanh"):

    a_t = x_t W + h_{t-1} U + b
    h_t = tanh(a_t)                                  hidden state (and the output y_t)

Why the plain RNN is hard to train: the gradient that reaches h_k from a loss at step t > k is

    dL/dh_k = dL/dh_t  (U^T diag(1 - h_t^2)) (U^T diag(1 - h_{t-1}^2)) ... (U^T diag(1 - h_{k+1}^2))

in row-vector form: a product of t - k matrices U^T diag(1 - h^2). Its size goes roughly like
(largest singular value of U times the typical tanh slope) to the power t - k, so over long spans
it shrinks to nothing (vanishing; tanh' <= 1 makes this the usual case) or blows up (exploding).
The LSTM's cell state replaces this product with c_t = f_t * c_{t-1} + ..., whose gradient path is
multiplied only by the forget gate, which the network can hold near 1.

Variable lengths follow PyTorch's packed sequences: past its length a sequence's h stays as it was
and its outputs are zero.
"""
import numpy as np

from lstmkit.cells.lstm import check_args, step_mask


def rnn_forward(x, W, U, b, h0=None, lengths=None):
    """Run the tanh RNN over x (T, B, I).

    Returns y (T, B, H) every hidden state, h_T (B, H), and the cache for backward.
    """
    T, B, _, H = check_args(x, W, U, b, h0, lengths, 1, lambda H: (H,))
    dtype = x.dtype
    h = np.zeros((B, H), dtype) if h0 is None else np.asarray(h0, dtype)
    mask = step_mask(lengths, T, B, dtype)

    xw = (x.reshape(T * B, -1) @ W + b).reshape(T, B, H)  # x_t W + b for every t at once
    h_prev = np.empty((T, B, H), dtype)  # h_{t-1} as carried into step t
    h_new = np.empty((T, B, H), dtype)   # tanh(a_t), the step's new state before masking
    y = np.empty((T, B, H), dtype)
    for t in range(T):
        h_prev[t] = h
        h_new[t] = np.tanh(xw[t] + h @ U)  # h_t = tanh(x_t W + h_{t-1} U + b)
        m = mask[t]
        y[t] = m * h_new[t]
        h = m * h_new[t] + (1 - m) * h     # finished sequences keep their state
    cache = dict(x=x, W=W, U=U, h_prev=h_prev, h_new=h_new, mask=mask)
    return y, h, cache


def rnn_backward(dy, dh_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, H), dU (H, H), db (H,), dh0 (B, H).
    """
    x, W, U, h_prev, h_new, mask = (cache[k] for k in ("x", "W", "U", "h_prev", "h_new", "mask"))
    T, B, H = h_new.shape
    dh = np.zeros((B, H), x.dtype) if dh_T is None else np.array(dh_T, x.dtype)
    da = np.empty((T, B, H), x.dtype)  # gradient of the pre-activations a_t
    for t in reversed(range(T)):
        m = mask[t]
        da[t] = m * (dy[t] + dh) * (1 - h_new[t] ** 2)  # h_t reached y_t and step t+1; tanh' = 1 - h^2
        dh = da[t] @ U.T + (1 - m) * dh                 # to h_{t-1}, plus the carried state
    da2 = da.reshape(T * B, H)
    dx = (da2 @ W.T).reshape(x.shape)
    dW = x.reshape(T * B, -1).T @ da2
    dU = h_prev.reshape(T * B, H).T @ da2
    db = da2.sum(axis=0)
    return dx, dW, dU, db, dh


def rnn_step(x, h, W, U, b):
    """One step for streaming inference: x (B, I), h (B, H) -> new h (B, H)."""
    return np.tanh(x @ W + h @ U + b)
