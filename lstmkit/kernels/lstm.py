"""The fast LSTM: same functions, signatures and results as `lstmkit.cells.lstm`, compiled.

Forward: the input projection of all steps is one gemm, x (T*B, I) @ W -> gates (T*B, 4H); then
a compiled loop adds h_{t-1} @ U into gates[t] (beta = 1, no temporary) and runs vectorised
passes that apply the nonlinearities, update c and h and store what BPTT needs. Backward: a
compiled loop that, per step, computes the gate gradients in a few vectorised passes and adds
dz_t U^T into dh; after it dx, dW and dU are three large gemms over all steps. Nothing is
allocated inside the time loops. See `lstmkit.cells.lstm` for the equations.

The per-step product goes to `core.packed_gemm` (U packed once per call into column panels): an
8x32 register tile for float32 batches of 8 or more, a 1x128 one for smaller batches (when the
columns fill the panels), else BLAS. The weight gradients x^T dz go to `core.gemm_tn`.
Threads (threads.py says which and why): the large products are cut among them by
`core.gemm_parallel`; the recurrence is cut by batch rows (`_batch_parts`), each thread running
every step for its own rows, so no thread waits for another within the time loop.

Buffers (time-major, as in the reference):

    gates  (T, B, 4H)  pre-activations, then i, f, (g+1)/2, o after their nonlinearities
    hs     (T+1, B, H) hs[0] = h0, hs[t+1] = h carried out of step t (frozen past a length)
    cs     (T+1, B, H) the same for c
    tanh_c (T, B, H)   tanh(c_t) of each step's new cell
    dz     (T, B, 4H)  gradient of the gate pre-activations (backward only)
"""
import numpy as np

from lstmkit.kernels import threads
from lstmkit.kernels.core import (ROW_COLS, TILE_COLS, TILE_ROWS, gemm, gemm_parallel, gemm_tn, jit, pack, packed_gemm,
                                  vexp, wide_vectors)

threads.apply_env()


@jit
def _activate(z, scale, shift):
    """z (4H,) <- sigmoid(scale * z + shift) in place: one vectorised pass over all four gates.
    scale is 1 for i, f, o and 2 for g, whose tanh is then 2 sigmoid(2z) - 1."""
    wide_vectors()
    one = z.dtype.type(1.0)
    for j in range(z.shape[0]):
        z[j] = one / (one + vexp(-(scale[j] * z[j] + shift[j])))


@jit
def _forward_loop(gates, scale, shift, hs, cs, tanh_c, y, U, Up, lengths, r0, r1):
    """Recurrence over gates (T, B, 4H) holding x_t W; scale, shift (4H,) from `_gate_affine`,
    U (H, 4H), Up U packed (4H/32, H, 32) or empty to use BLAS, lengths (B,) int64. Fills hs, cs
    (T+1, B, H), tanh_c, y (T, B, H) and turns gates into i, f, (g+1)/2, o in place (g = tanh is
    kept as the sigmoid it is computed from). Only rows r0:r1 of the batch are run (the arrays
    stay whole so that every row is a contiguous vector: sliced batches do not vectorise)."""
    wide_vectors()
    T, B, G = gates.shape
    H = G // 4
    one, two = gates.dtype.type(1.0), gates.dtype.type(2.0)
    for t in range(T):
        if Up.shape[0]:                                      # z_t = x_t W + h_{t-1} U
            packed_gemm(hs[t][r0:r1], Up, gates[t][r0:r1])
        else:
            gemm(hs[t][r0:r1], U, gates[t][r0:r1], 1.0, False, False)
        for r in range(r0, r1):
            hp, cp, hn, cn, yr = hs[t, r], cs[t, r], hs[t + 1, r], cs[t + 1, r], y[t, r]
            if t >= lengths[r]:                              # past its length: state frozen, y = 0
                for j in range(H):
                    hn[j] = hp[j]
                    cn[j] = cp[j]
                    yr[j] = 0.0
                continue
            z = gates[t, r]
            _activate(z, scale, shift)
            i, f, gs, o, th = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:], tanh_c[t, r]
            for j in range(H):
                cn[j] = f[j] * cp[j] + i[j] * (two * gs[j] - one)   # C_t = f C_{t-1} + i C~_t
            for j in range(H):
                th[j] = two / (one + vexp(-two * cn[j])) - one       # tanh(C_t)
            for j in range(H):
                hn[j] = o[j] * th[j]                                  # h_t = o tanh(C_t)
            for j in range(H):
                yr[j] = hn[j]


@jit
def _backward_loop(dy, dh, dc, gates, cs, tanh_c, U, UTp, lengths, dz, db, r0, r1):
    """BPTT over T steps. dy (T, B, H); dh, dc (B, H) carry the state gradients and end as
    dh0, dc0; gates, cs, tanh_c from forward; UTp U^T packed (H/32, 4H, 32) or empty to use
    BLAS, rows r0:r1 as in `_forward_loop`; fills dz (T, B, 4H) and accumulates
    db (4H,) (float64). Each pass reads and writes few arrays so that it vectorises."""
    wide_vectors()
    T, B, G = gates.shape
    H = G // 4
    one, two = gates.dtype.type(1.0), gates.dtype.type(2.0)
    for t in range(T - 1, -1, -1):
        for r in range(r0, r1):
            d = dz[t, r]
            if t >= lengths[r]:          # no step here: dz = 0, dh and dc pass through unchanged
                for j in range(G):
                    d[j] = 0.0
                continue
            a, cp, th, dyr, dhr, dcr = gates[t, r], cs[t, r], tanh_c[t, r], dy[t, r], dh[r], dc[r]
            i, f, gs, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
            di, df, dg, do = d[:H], d[H:2 * H], d[2 * H:3 * H], d[3 * H:]
            for j in range(H):
                dhr[j] += dyr[j]                                    # h_t reached y_t and step t+1
            for j in range(H):
                dcr[j] += dhr[j] * o[j] * (one - th[j] * th[j])     # through h_t = o tanh(C_t)
            for j in range(H):
                do[j] = dhr[j] * th[j] * o[j] * (one - o[j])
            for j in range(H):
                g = two * gs[j] - one
                di[j] = dcr[j] * g * i[j] * (one - i[j])            # C_t = f C_{t-1} + i C~_t
                dg[j] = dcr[j] * i[j] * (one - g * g)
            for j in range(H):
                df[j] = dcr[j] * cp[j] * f[j] * (one - f[j])
            for j in range(H):
                dcr[j] *= f[j]                                      # to C_{t-1}
            for j in range(H):
                dhr[j] = 0.0                                        # the gemm below adds dz_t U^T
            for j in range(G):
                db[j] += d[j]
        if UTp.shape[0]:                                           # dh_{t-1} = dz_t U^T (+ frozen)
            packed_gemm(dz[t][r0:r1], UTp, dh[r0:r1])
        else:
            gemm(dz[t][r0:r1], U, dh[r0:r1], 1.0, False, True)


def _batch_parts(B, H, dtype):
    """How many threads run the recurrence side by side, each on its own run of batch rows (rows
    never meet within a layer, so no thread waits for another inside the time loop). Each run
    needs the 8 rows of a packed tile (float32) and enough work to pay a thread (>= 4 MFLOP per
    step in all)."""
    n = threads.get_num_threads()
    if n == 1 or 8 * B * H * H < 4e6:
        return 1
    return max(1, min(n, B // TILE_ROWS) if dtype == np.float32 else min(n, B))


def _row_runs(B, parts):
    """parts runs (r0, r1) covering the batch rows 0..B."""
    return [(q * B // parts, (q + 1) * B // parts) for q in range(parts)]


def _packed(U, B, transpose):
    """U (H, 4H) (or U^T) packed for `packed_gemm` when that beats BLAS for the per-step product of
    a batch of B (float32): 32-column panels for B >= 8, 128-column panels for smaller batches;
    else (float64, or columns that do not fill the panels) an empty array: use BLAS."""
    H, G = U.shape
    N = H if transpose else G
    width = TILE_COLS if B >= TILE_ROWS else ROW_COLS
    if U.dtype == np.float32 and N % width == 0:
        packed = np.empty((N // width, G if transpose else H, width), U.dtype)
        pack(U, packed, transpose)
        return packed
    return np.empty((0, 0, TILE_COLS), U.dtype)


def _gate_affine(b):
    """scale, shift (4H,) so that sigmoid(scale * z + shift) gives i, f, (tanh+1)/2, o from the
    pre-activation z without bias: scale 2 and shift 2b on the g block, 1 and b elsewhere."""
    H = b.shape[0] // 4
    scale = np.ones_like(b)
    scale[2 * H:3 * H] = 2
    return scale, scale * b


@jit
def _step(x, h, c, W, U, scale, shift, z, h_out, c_out):
    """One step: x (B, I), h, c (B, H) -> h_out, c_out (B, H); z (B, 4H) is scratch."""
    wide_vectors()
    B, G = z.shape
    H = G // 4
    one, two = z.dtype.type(1.0), z.dtype.type(2.0)
    gemm(x, W, z, 0.0, False, False)
    gemm(h, U, z, 1.0, False, False)
    for r in range(B):
        zr, cp, hn, cn = z[r], c[r], h_out[r], c_out[r]
        _activate(zr, scale, shift)
        for j in range(H):
            cn[j] = zr[H + j] * cp[j] + zr[j] * (two * zr[2 * H + j] - one)
        for j in range(H):
            hn[j] = zr[3 * H + j] * (two / (one + vexp(-two * cn[j])) - one)


def _product(a, b, c, trans_a=False, trans_b=False):
    """c = op(a) @ op(b), a large product over all steps: shared among the threads when it has at
    least 2 MFLOP, each thread a single-threaded BLAS call. The weight gradients a^T b (float32,
    whole panels) go to `core.gemm_tn` instead, each thread taking a run of column panels."""
    parts = threads.get_num_threads()
    flops = 2 * c.shape[0] * c.shape[1] * (a.shape[0] if trans_a else a.shape[1])
    if trans_a and not trans_b and c.dtype == np.float32 and c.shape[1] % TILE_COLS == 0:
        panels = c.shape[1] // TILE_COLS
        parts = min(parts, panels) if flops >= 2e6 else 1
        threads.run_parallel(gemm_tn, [(a, b, c, q * panels // parts, (q + 1) * panels // parts)
                                       for q in range(parts)])
    elif parts > 1 and flops >= 2e6:
        gemm_parallel(a, b, c, 0.0, trans_a, trans_b, parts)
    else:
        gemm(a, b, c, 0.0, trans_a, trans_b)


# --- argument checks and the public functions ----------------------------------------------------

def _dtype_of(x):
    dtype = np.asarray(x).dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be float32 or float64, got {dtype}; convert it with x.astype(np.float32)")
    return dtype


def _as(a, dtype, shape, name):
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def _weights(W, U, b, I, dtype):
    U = np.ascontiguousarray(U, dtype=dtype)
    if U.ndim != 2 or U.shape[1] != 4 * U.shape[0] or U.shape[0] == 0:
        raise ValueError(f"U must have shape (H, 4H) with H >= 1, got {U.shape}")
    H = U.shape[0]
    return _as(W, dtype, (I, 4 * H), "W"), U, _as(b, dtype, (4 * H,), "b"), H


def _lengths(lengths, T, B):
    if lengths is None:
        return np.full(B, T, np.int64)
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be {B} integers (one per sequence), got {lengths!r}")
    if np.any(lengths < 0) or np.any(lengths > T):
        raise ValueError(f"lengths must lie in [0, {T}] (the number of time steps), got {lengths.tolist()}")
    return lengths.astype(np.int64)


def lstm_forward(x, W, U, b, h0=None, c0=None, lengths=None):
    """Run the LSTM over x (T, B, I).

    Returns y (T, B, H) every hidden state, (h_T, c_T) each (B, H), and the cache for backward.
    """
    dtype = _dtype_of(x)
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x must be (time, batch, features) with no empty axis, got shape {x.shape}")
    T, B, I = x.shape
    W, U, b, H = _weights(W, U, b, I, dtype)
    lens = _lengths(lengths, T, B)
    gates = np.empty((T, B, 4 * H), dtype)
    hs = np.empty((T + 1, B, H), dtype)
    cs = np.empty((T + 1, B, H), dtype)
    hs[0] = 0 if h0 is None else _as(h0, dtype, (B, H), "h0")
    cs[0] = 0 if c0 is None else _as(c0, dtype, (B, H), "c0")
    tanh_c = np.empty((T, B, H), dtype)
    y = np.empty((T, B, H), dtype)
    threads.blas_single()
    _product(x.reshape(T * B, I), W, gates.reshape(T * B, 4 * H))     # x_t W for every t at once
    scale, shift = _gate_affine(b)
    parts = _batch_parts(B, H, dtype)
    Up = _packed(U, B // parts, False)
    threads.run_parallel(_forward_loop, [(gates, scale, shift, hs, cs, tanh_c, y, U, Up, lens, r0, r1)
                                         for r0, r1 in _row_runs(B, parts)])
    cache = dict(x=x, W=W, U=U, gates=gates, hs=hs, cs=cs, tanh_c=tanh_c, lengths=lens)
    return y, (hs[T].copy(), cs[T].copy()), cache


def lstm_backward(dy, dh_T, dc_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T, dc_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, 4H), dU (H, 4H), db (4H,), dh0 (B, H), dc0 (B, H).
    """
    x, W, U, gates = cache["x"], cache["W"], cache["U"], cache["gates"]
    T, B, I = x.shape
    H = U.shape[0]
    dtype = x.dtype
    dy = _as(dy, dtype, (T, B, H), "dy")
    dh = np.zeros((B, H), dtype) if dh_T is None else _as(dh_T, dtype, (B, H), "dh_T").copy()
    dc = np.zeros((B, H), dtype) if dc_T is None else _as(dc_T, dtype, (B, H), "dc_T").copy()
    dz = np.empty((T, B, 4 * H), dtype)
    threads.blas_single()
    parts = _batch_parts(B, H, dtype)
    db = np.zeros((parts, 4 * H), np.float64)   # one row per run, so no two threads add to one
    UTp = _packed(U, B // parts, True)
    threads.run_parallel(_backward_loop, [(dy, dh, dc, gates, cache["cs"], cache["tanh_c"], U, UTp,
                                           cache["lengths"], dz, db[q], r0, r1)
                                          for q, (r0, r1) in enumerate(_row_runs(B, parts))])
    dx = np.empty((T, B, I), dtype)
    dW = np.empty((I, 4 * H), dtype)
    dU = np.empty((H, 4 * H), dtype)
    dz2 = dz.reshape(T * B, 4 * H)
    _product(dz2, W, dx.reshape(T * B, I), trans_b=True)             # dx = dz W^T
    _product(x.reshape(T * B, I), dz2, dW, trans_a=True)              # dW = x^T dz
    _product(cache["hs"][:T].reshape(T * B, H), dz2, dU, trans_a=True)  # dU = h_{t-1}^T dz
    return dx, dW, dU, db.sum(axis=0).astype(dtype), dh, dc


def lstm_step(x, h, c, W, U, b):
    """One step for streaming inference: x (B, I), h and c (B, H) -> new (h, c)."""
    dtype = _dtype_of(x)
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"x must be (batch, features) for one step, got shape {x.shape}")
    B, I = x.shape
    W, U, b, H = _weights(W, U, b, I, dtype)
    h = _as(h, dtype, (B, H), "h")
    c = _as(c, dtype, (B, H), "c")
    h_out = np.empty((B, H), dtype)
    c_out = np.empty((B, H), dtype)
    scale, shift = _gate_affine(b)
    threads.blas_single()
    _step(x, h, c, W, U, scale, shift, np.empty((B, 4 * H), dtype), h_out, c_out)
    return h_out, c_out
