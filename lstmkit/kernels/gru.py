"""The fast GRU: same functions, signatures and results as `lstmkit.cells.gru`, compiled on the
LSTM's machinery (`lstmkit.kernels.common`: the split among threads and the products). See
`lstmkit.cells.gru` for the equations (PyTorch's formulation: the reset gate scales
h_{t-1} U_n + b_hn, so x W and h U stay apart).

Buffers (time-major, as in the reference; from `buffers`, recycled between calls):

    gates (T, B, 3H)  x_t W (no bias), then r, z, n after their nonlinearities
    hu    (T, B, 3H)  h_{t-1} U (no bias)
    hs    (T+1, B, H) hs[0] = h0, hs[t+1] = h carried out of step t (frozen past a length)
    dxw   (T, B, 3H)  gradient of x_t W + b_ih (backward only)
    dhu   (T, B, 3H)  gradient of h_{t-1} U + b_hh (backward only)
"""
import numpy as np

from lstmkit.kernels import buffers, threads
from lstmkit.kernels.common import (backward_args, backward_on_threads, backward_start, bptt_at, checked,
                                    finish_backward, forward_on_threads, product, project, sequence_args,
                                    step_args, step_product)
from lstmkit.kernels.core import finished, gemm, jit, vsigmoid, vtanh, wide_vectors

threads.apply_env()


@jit(inline=True)
def _gates(a, u, hp, b, rz_shift, hn):
    """One row of one step: a (3H,) x_t W -> r, z, n in place; u (3H,) h_{t-1} U; hp (H,) h_{t-1};
    b (2, 3H) the biases, rz_shift (2H,) b_ih + b_hh of r and z; hn (H,) <- h_t. Each
    pass reads and writes few arrays so that it vectorises."""
    wide_vectors()
    H = hn.shape[0]
    for j in range(2 * H):                 # r, z = sigmoid(x W + b_i + h U + b_h)
        a[j] = vsigmoid(a[j] + u[j] + rz_shift[j])
    b_ih, b_hh = b[0], b[1]
    for j in range(H):                     # n = tanh(x W_n + b_in + r * (h U_n + b_hn))
        a[2 * H + j] = vtanh(a[2 * H + j] + b_ih[2 * H + j] + a[j] * (u[2 * H + j] + b_hh[2 * H + j]))
    for j in range(H):                     # h_t = (1 - z) n + z h_{t-1}
        hn[j] = a[2 * H + j] + a[H + j] * (hp[j] - a[2 * H + j])


@jit
def _forward_part(x, W, Wp, U, Up, UTp, fill, b, rz_shift, gates, hu, hs, y, lengths, sync, q, k0, k1, block, r0, r1):
    """Thread q's share of the forward: its rows of x W (`common.project`: its own batch rows, or
    rows k0:k1 of the T B rows, `block` at a time) and the recurrence of batch rows r0:r1, each
    step once its rows of x W are projected.
    x (T, B, I), W (I, 3H), U (H, 3H); Wp, Up packed or empty to use BLAS, packed first (and UTp
    after the projection) where fill says so (`common.project`); b (2, 3H), rz_shift (2H,) from
    `_rz_shift`; lengths (B,) int64. Fills gates with r, z, n, hu, hs, y."""
    T, B, G = gates.shape
    project(x, W, Wp, U, Up, UTp, fill, gates, k0, k1, block, r0, r1, sync, q)   # x_t W, all t
    for t in range(T):
        step_product(hs[t][r0:r1], U, Up, hu[t][r0:r1], False, sync, t, B)   # h_{t-1} U
        for r in range(r0, r1):
            hp, hn, yr = hs[t, r], hs[t + 1, r], y[t, r]
            if t >= lengths[r]:                              # past its length: state frozen, y = 0
                hn[:] = hp
                yr[:] = 0.0
                continue
            _gates(gates[t, r], hu[t, r], hp, b, rz_shift, hn)
            yr[:] = hn
    finished(sync, q)


@jit
def _backward_part(x, W, U, UTp, pack_ut, b, dy, dh, gates, hu, hs, lengths, dxw, dhu, dx, dW, dU, db, dbs, scratch,
                   sync, q, r0, r1, c0, c1, block):
    """Thread q's share of BPTT: its batch rows r0:r1 over all steps, then its share of dx, dW and
    dU (`finish_backward`: of its own rows, or of columns c0:c1, summed beside BPTT where
    block > 0). dy (T, B, H); dh (B, H) carries the state gradient and ends as dh0; gates, hu, hs
    from forward; UTp U^T packed (by the threads where pack_ut) or empty to use BLAS; dbs the
    threads' own bias sums and scratch the buffers of `finish_backward`. Fills dxw, dhu (T, B,
    3H) and its share of dx (T, B, I), dW (I, 3H), dU (H, 3H) and db (2, 3H)."""
    dbq = backward_start(U, UTp, pack_ut, dbs, db, sync, q)     # (run_parallel's caller may go on)
    wide_vectors()
    T, B, G = gates.shape
    H = G // 3
    one = gates.dtype.type(1.0)
    b_hh = b[1]
    for t in range(T - 1, -1, -1):
        for r in range(r0, r1):
            gx, gh = dxw[t, r], dhu[t, r]
            if t >= lengths[r]:          # no step here: no gradient, dh passes through unchanged
                gx[:] = 0.0
                gh[:] = 0.0
                continue
            a, u, hp, dhr, dyr = gates[t, r], hu[t, r], hs[t, r], dh[r], dy[t, r]
            for j in range(H):
                dhr[j] += dyr[j]                                    # h_t reached y_t and step t+1
            for j in range(H):                                      # h_t = (1 - z) n + z h_{t-1}
                n, z = a[2 * H + j], a[H + j]
                gx[2 * H + j] = dhr[j] * (one - z) * (one - n * n)  # through n = tanh(a_n)
                gx[H + j] = dhr[j] * (hp[j] - n) * z * (one - z)
            for j in range(H):                                      # a_n = .. + r (h U_n + b_hn)
                gx[j] = gx[2 * H + j] * (u[2 * H + j] + b_hh[2 * H + j]) * a[j] * (one - a[j])
            for j in range(2 * H):
                gh[j] = gx[j]
            for j in range(H):
                gh[2 * H + j] = gx[2 * H + j] * a[j]
            for j in range(H):
                dhr[j] *= a[H + j]                                  # directly via z; the product adds dhu U^T
            for j in range(G):
                dbq[0, j] += gx[j]
                dbq[1, j] += gh[j]
        product(dhu[t][r0:r1], U, UTp, dh[r0:r1], True, True, t)   # dh_{t-1} += dhu_t U^T
        bptt_at(sync, q, t)
    finish_backward(x, hs, dxw, dhu, W, dx, dW, dU, db, dbs, scratch, sync, q, r0, r1, c0, c1, block)   # dx, dW, dU, db


@jit
def _step(x, h, W, U, b, rz_shift):
    """One step: x (B, I), h (B, H) -> new h (B, H)."""
    B, H = h.shape
    a, u, h_out = np.empty((B, 3 * H), x.dtype), np.empty((B, 3 * H), x.dtype), np.empty((B, H), x.dtype)
    gemm(x, W, a, 0.0, False, False)
    gemm(h, U, u, 0.0, False, False)
    for r in range(B):
        _gates(a[r], u[r], h[r], b, rz_shift, h_out[r])
    return h_out


def _rz_shift(b):
    """The bias of the r and z gates: b_ih + b_hh (2H,)."""
    H = b.shape[1] // 3
    return b[0, :2 * H] + b[1, :2 * H]


# --- the public functions --------------------------------------------------------------------------

def _bias_shape(H):
    return (2, 3 * H)


def gru_forward(x, W, U, b, h0=None, lengths=None):
    """Run the GRU over x (T, B, I).

    Returns y (T, B, H) every hidden state, h_T (B, H), and the cache for backward.
    """
    x, W, U, b, lens, H = sequence_args(x, W, U, b, lengths, 3, _bias_shape)
    T, B, _ = x.shape
    dtype = x.dtype
    gates, hu, hs = buffers.empty_group(((T, B, 3 * H), dtype), ((T, B, 3 * H), dtype), ((T + 1, B, H), dtype))
    hs[0] = 0 if h0 is None else checked(h0, dtype, (B, H), "h0")
    y = buffers.empty((T, B, H), dtype)
    UTp = forward_on_threads(_forward_part, x, W, U, (b, _rz_shift(b), gates, hu, hs, y), lens)
    cache = dict(x=x, W=W, U=U, UTp=UTp, b=b, gates=gates, hu=hu, hs=hs, lengths=lens)
    return y, hs[T].copy(), cache


def gru_backward(dy, dh_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, 3H), dU (H, 3H), db (2, 3H), dh0 (B, H).
    """
    dy, (dh,) = backward_args(dy, cache, dh_T=dh_T)
    dxw, dhu = buffers.empty_group((cache["gates"].shape, dy.dtype), (cache["gates"].shape, dy.dtype))
    dx, dW, dU, db = backward_on_threads(_backward_part, cache, (
        cache["b"], dy, dh, cache["gates"], cache["hu"], cache["hs"], cache["lengths"], dxw, dhu), cache["b"].shape)
    return dx, dW, dU, db, dh


def gru_step(x, h, W, U, b):
    """One step for streaming inference: x (B, I), h (B, H) -> new h (B, H)."""
    x, W, U, b, (h,) = step_args(x, W, U, b, 3, _bias_shape, h=h)
    return _step(x, h, W, U, b, _rz_shift(b))
