"""The fast tanh RNN: same functions, signatures and results as `lstmkit.cells.rnn`, compiled on the
LSTM's machinery (`lstmkit.kernels.common`: the split among threads and the products). See
`lstmkit.cells.rnn` for the equations.

Buffers (time-major, as in the reference; from `buffers`, recycled between calls):

    a   (T, B, H)   x_t W + h_{t-1} U (no bias), then h_t = tanh(a_t + b) (left so past a length)
    hs  (T+1, B, H) hs[0] = h0, hs[t+1] = h carried out of step t (frozen past a length)
    da  (T, B, H)   gradient of the pre-activations (backward only)
"""
import numpy as np

from lstmkit.kernels import buffers, threads
from lstmkit.kernels.common import (backward_args, backward_on_threads, backward_start, bptt_at, checked,
                                    finish_backward, forward_on_threads, product, project, sequence_args,
                                    step_args, step_product)
from lstmkit.kernels.core import finished, gemm, jit, vtanh, wide_vectors

threads.apply_env()


@jit(inline=True)
def _tanh_row(a, b, hn):
    """a (H,) <- tanh(a + b) in place, hn (H,) <- the same."""
    wide_vectors()
    for j in range(a.shape[0]):
        a[j] = vtanh(a[j] + b[j])               # h_t = tanh(x_t W + h_{t-1} U + b)
    for j in range(a.shape[0]):
        hn[j] = a[j]


@jit
def _forward_part(x, W, Wp, U, Up, UTp, fill, b, a, hs, y, lengths, sync, q, k0, k1, block, r0, r1):
    """Thread q's share of the forward: its rows of x W (`common.project`: its own batch rows, or
    rows k0:k1 of the T B rows, `block` at a time) and the recurrence of batch rows r0:r1, each
    step once its rows of x W are projected.
    x (T, B, I), W (I, H), U (H, H); Wp, Up packed or empty to use BLAS, packed first (and UTp
    after the projection) where fill says so (`common.project`); b (H,); lengths (B,) int64.
    Fills a with tanh(a_t + b), hs and y."""
    T, B, H = a.shape
    project(x, W, Wp, U, Up, UTp, fill, a, k0, k1, block, r0, r1, sync, q)   # x_t W, all t
    for t in range(T):
        step_product(hs[t][r0:r1], U, Up, a[t][r0:r1], True, sync, t, B)   # + h_{t-1} U
        for r in range(r0, r1):
            if t >= lengths[r]:                              # past its length: state frozen, y = 0
                hs[t + 1, r] = hs[t, r]
                y[t, r] = 0.0
                continue
            _tanh_row(a[t, r], b, hs[t + 1, r])
            y[t, r] = hs[t + 1, r]
    finished(sync, q)


@jit
def _backward_part(x, W, U, UTp, pack_ut, dy, dh, a, hs, lengths, da, dx, dW, dU, db, dbs, scratch,
                   sync, q, r0, r1, c0, c1, block):
    """Thread q's share of BPTT: its batch rows r0:r1 over all steps, then its share of dx, dW and
    dU (`finish_backward`: of its own rows, or of columns c0:c1, summed beside BPTT where
    block > 0). dy (T, B, H); dh (B, H) carries the state gradient and ends as dh0; a, hs from
    forward; UTp U^T packed (by the threads where pack_ut) or empty to use BLAS; dbs the threads'
    own bias sums and scratch the buffers of `finish_backward`. Fills da (T, B, H) and its share
    of dx (T, B, I), dW (I, H), dU (H, H) and db (H,)."""
    dbq = backward_start(U, UTp, pack_ut, dbs, db, sync, q)     # (run_parallel's caller may go on)
    wide_vectors()
    T, B, H = a.shape
    one = a.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for r in range(r0, r1):
            d = da[t, r]
            if t >= lengths[r]:          # no step here: da = 0, dh passes through unchanged
                d[:] = 0.0
                continue
            h, dhr, dyr = a[t, r], dh[r], dy[t, r]
            for j in range(H):
                d[j] = (dyr[j] + dhr[j]) * (one - h[j] * h[j])  # h_t reached y_t and step t+1; tanh'
            for j in range(H):
                dhr[j] = 0.0                                     # the product below adds da_t U^T
                dbq[j] += d[j]
        product(da[t][r0:r1], U, UTp, dh[r0:r1], True, True, t)   # dh_{t-1} = da_t U^T (+ frozen)
        bptt_at(sync, q, t)
    finish_backward(x, hs, da, da, W, dx, dW, dU, db, dbs, scratch, sync, q, r0, r1, c0, c1, block)   # dx, dW, dU, db


@jit
def _step(x, h, W, U, b):
    """One step: x (B, I), h (B, H) -> new h (B, H)."""
    a, h_out = np.empty(h.shape, x.dtype), np.empty(h.shape, x.dtype)
    gemm(x, W, a, 0.0, False, False)
    gemm(h, U, a, 1.0, False, False)
    for r in range(h.shape[0]):
        _tanh_row(a[r], b, h_out[r])
    return h_out


# --- the public functions --------------------------------------------------------------------------

def _bias_shape(H):
    return (H,)


def rnn_forward(x, W, U, b, h0=None, lengths=None):
    """Run the tanh RNN over x (T, B, I).

    Returns y (T, B, H) every hidden state, h_T (B, H), and the cache for backward.
    """
    x, W, U, b, lens, H = sequence_args(x, W, U, b, lengths, 1, _bias_shape)
    T, B, _ = x.shape
    dtype = x.dtype
    a, hs = buffers.empty_group(((T, B, H), dtype), ((T + 1, B, H), dtype))
    hs[0] = 0 if h0 is None else checked(h0, dtype, (B, H), "h0")
    y = buffers.empty((T, B, H), dtype)
    UTp = forward_on_threads(_forward_part, x, W, U, (b, a, hs, y), lens)
    cache = dict(x=x, W=W, U=U, UTp=UTp, a=a, hs=hs, lengths=lens)
    return y, hs[T].copy(), cache


def rnn_backward(dy, dh_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, H), dU (H, H), db (H,), dh0 (B, H).
    """
    dy, (dh,) = backward_args(dy, cache, dh_T=dh_T)
    da = buffers.empty(dy.shape, dy.dtype)
    dx, dW, dU, db = backward_on_threads(_backward_part, cache, (
        dy, dh, cache["a"], cache["hs"], cache["lengths"], da), da.shape[2:])
    return dx, dW, dU, db, dh


def rnn_step(x, h, W, U, b):
    """One step for streaming inference: x (B, I), h (B, H) -> new h (B, H)."""
    x, W, U, b, (h,) = step_args(x, W, U, b, 1, _bias_shape, h=h)
    return _step(x, h, W, U, b)
