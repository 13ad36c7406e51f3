"""The fast LSTM: same functions, signatures and results as `lstmkit.cells.lstm`, compiled.

Threads split the batch rows (`_runs`): rows never meet inside a layer, so inside the time loop
each thread runs every step of its own rows without waiting for another. Each call starts one
compiled function per thread, once: no Python, no allocation and no thread start per step.

forward   x_t W for all steps, each thread a block of the T B rows (`core.packed_gemm` on W
          packed into column panels up to I = 512, BLAS beyond), one barrier (a thread's batch
          rows were projected by all), then per step h_{t-1} U added into gates[t] (U packed
          too) and vectorised passes that apply the nonlinearities, update c and h and store
          what BPTT needs.
backward  per step the gate gradients in a few vectorised passes and dz_t U^T added into dh;
          then, after one barrier (they read every row of dz), each thread's share of the three
          large products: rows of dx = dz W^T (BLAS) and column panels of dW = x^T dz and
          dU = h_{t-1}^T dz (`core.gemm_tn`).

The per-step product uses an 8 x 32 register tile for float32 runs of 8 rows or more, a 1 x 128
one for smaller batches (when the columns fill the panels), else BLAS; float64 uses BLAS.

Buffers (time-major, as in the reference; from `buffers`, recycled between calls):

    gates  (T, B, 4H)  pre-activations, then i, f, (g+1)/2, o after their nonlinearities
    hs     (T+1, B, H) hs[0] = h0, hs[t+1] = h carried out of step t (frozen past a length)
    cs     (T+1, B, H) the same for c
    tanh_c (T, B, H)   tanh(c_t) of each step's new cell
    dz     (T, B, 4H)  gradient of the gate pre-activations (backward only)
    Wp, Up (4H/w, I or H, w)  W and U in column panels of w = 32 or 128 (empty: use BLAS)
    UTp    (H/w, 4H, w)       U^T the same way
"""
import numpy as np

from lstmkit.kernels import buffers, threads
from lstmkit.kernels.core import (ROW_COLS, TILE_COLS, TILE_ROWS, barrier, barrier_array, gemm, gemm_tn,
                                  gemm_tn_scratch, jit, pack, packed_gemm, vexp, vrecip, vtanh, wide_vectors)

threads.apply_env()


@jit
def _activate(z, scale, shift):
    """z (4H,) <- sigmoid(scale * z + shift) in place: one vectorised pass over all four gates.
    scale is 1 for i, f, o and 2 for g, whose tanh is then 2 sigmoid(2z) - 1."""
    wide_vectors()
    one = z.dtype.type(1.0)
    for j in range(z.shape[0]):
        z[j] = vrecip(one + vexp(-(scale[j] * z[j] + shift[j])))


@jit
def _forward_part(x, W, Wp, U, Up, scale, shift, gates, hs, cs, tanh_c, y, lengths, sync, q, k0, k1, r0, r1):
    """Thread q's share of the forward: rows k0:k1 of x W over all T B rows, then (after a
    barrier) the recurrence of batch rows r0:r1. x (T, B, I), W (I, 4H), U (H, 4H); Wp, Up packed
    (4H/w, I or H, w) or empty to use BLAS; scale, shift (4H,) from `_gate_affine`; lengths (B,)
    int64; sync from `core.barrier_array`. Fills hs, cs (T+1, B, H), tanh_c, y (T, B, H) and
    gates (T, B, 4H) with i, f, (g+1)/2, o (g = tanh kept as the sigmoid it is computed from).
    The arrays stay whole so that every row is a contiguous vector (sliced batches do not
    vectorise)."""
    wide_vectors()
    T, B, G = gates.shape
    H = G // 4
    one, two = gates.dtype.type(1.0), gates.dtype.type(2.0)
    x2, g2 = x.reshape(T * B, x.shape[2]), gates.reshape(T * B, G)     # x_t W for every t at once
    if Wp.shape[0]:
        packed_gemm(x2[k0:k1], Wp, g2[k0:k1], False)
    else:
        gemm(x2[k0:k1], W, g2[k0:k1], 0.0, False, False)
    barrier(sync, q, 1)                                      # the recurrence reads every step's rows
    for t in range(T):
        if Up.shape[0]:                                      # z_t = x_t W + h_{t-1} U
            packed_gemm(hs[t][r0:r1], Up, gates[t][r0:r1], True)
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
                th[j] = vtanh(cn[j])                                  # tanh(C_t)
            for j in range(H):
                hn[j] = o[j] * th[j]                                  # h_t = o tanh(C_t)
            for j in range(H):
                yr[j] = hn[j]


@jit
def _backward_part(x, W, U, UTp, dy, dh, dc, gates, hs, cs, tanh_c, lengths, dz, dx, dW, dU, db, ap, bp,
                   sync, q, r0, r1, k0, k1, c0, c1):
    """Thread q's share of BPTT: its batch rows r0:r1 over all steps, then (after a barrier) rows
    k0:k1 of dx and columns c0:c1 of dW and dU (multiples of 32 for `core.gemm_tn`).
    dy (T, B, H); dh, dc (B, H) carry the state gradients and end as dh0, dc0; gates, hs, cs,
    tanh_c from forward; UTp U^T packed (H/w, 4H, w) or empty to use BLAS; ap, bp scratch for
    `core.gemm_tn`, or ap empty to use BLAS for the weight gradients. Fills dz (T, B, 4H),
    accumulates db (4H,) (float64, this thread's own) and fills its share of dx (T, B, I),
    dW (I, 4H) and dU (H, 4H). Each pass reads and writes few arrays so that it vectorises."""
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
            packed_gemm(dz[t][r0:r1], UTp, dh[r0:r1], True)
        else:
            gemm(dz[t][r0:r1], U, dh[r0:r1], 1.0, False, True)
    barrier(sync, q, 1)                                  # the products below read every row of dz
    I = x.shape[2]
    dz2, x2, h2 = dz.reshape(T * B, G), x.reshape(T * B, I), hs[:T].reshape(T * B, H)
    gemm(dz2[k0:k1], W, dx.reshape(T * B, I)[k0:k1], 0.0, False, True)   # dx = dz W^T
    if ap.shape[0]:                                        # dW = x^T dz, dU = h_{t-1}^T dz
        gemm_tn(x2, dz2, dW, c0 // TILE_COLS, c1 // TILE_COLS, ap, bp)
        gemm_tn(h2, dz2, dU, c0 // TILE_COLS, c1 // TILE_COLS, ap, bp)
    else:
        gemm(x2, dz2[:, c0:c1], dW[:, c0:c1], 0.0, True, False)
        gemm(h2, dz2[:, c0:c1], dU[:, c0:c1], 0.0, True, False)


def _batch_parts(B, H, dtype):
    """How many threads run the recurrence side by side, each on its own run of batch rows. Each
    run needs the 8 rows of a packed tile (float32) and enough work to pay for a thread (about
    0.1 ms to start: >= 0.5 MFLOP per step in all)."""
    n = threads.get_num_threads()
    if n == 1 or 8 * B * H * H < 5e5:
        return 1
    return max(1, min(n, B // TILE_ROWS) if dtype == np.float32 else min(n, B))


PROJECTION_TILE_MAX_I = 512   # x W goes to the packed tile up to this I, to BLAS beyond (faster there)


def _runs(n, parts, multiple=1):
    """parts runs (lo, hi) covering 0..n, their bounds multiples of `multiple` but the last."""
    bounds = [q * n // parts // multiple * multiple for q in range(parts)] + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def _packed(U, rows, transpose):
    """U (K, N) (or U^T for U (N, K)) packed for `packed_gemm` when that beats BLAS for a product
    with `rows` rows (float32): 32-column panels for 8 rows or more, 128-column panels for
    fewer; else (float64, or columns that do not fill the panels) an empty array: use BLAS."""
    K, N = U.shape[::-1] if transpose else U.shape
    width = TILE_COLS if rows >= TILE_ROWS else ROW_COLS
    if U.dtype == np.float32 and N % width == 0:
        packed = buffers.empty((N // width, K, width), U.dtype)
        pack(U, packed, transpose)
        return packed
    return _use_blas(U.dtype)


def _use_blas(dtype):
    """The empty packed array that tells a compiled part to use BLAS for a product."""
    return np.empty((0, 0, TILE_COLS), dtype)


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
            hn[j] = zr[3 * H + j] * vtanh(cn[j])


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
    gates = buffers.empty((T, B, 4 * H), dtype)
    hs = buffers.empty((T + 1, B, H), dtype)
    cs = buffers.empty((T + 1, B, H), dtype)
    hs[0] = 0 if h0 is None else _as(h0, dtype, (B, H), "h0")
    cs[0] = 0 if c0 is None else _as(c0, dtype, (B, H), "c0")
    tanh_c = buffers.empty((T, B, H), dtype)
    y = buffers.empty((T, B, H), dtype)
    scale, shift = _gate_affine(b)
    parts = _batch_parts(B, H, dtype)
    Wp = _packed(W, T * B, False) if I <= PROJECTION_TILE_MAX_I else _use_blas(dtype)
    Up = _packed(U, B // parts, False)
    sync = barrier_array(parts)
    threads.blas_single()
    threads.run_parallel(_forward_part, [
        (x, W, Wp, U, Up, scale, shift, gates, hs, cs, tanh_c, y, lens, sync, q, k0, k1, r0, r1)
        for q, ((k0, k1), (r0, r1)) in enumerate(zip(_runs(T * B, parts, TILE_ROWS), _runs(B, parts)))], sync)
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
    dh, dc = buffers.zeros((B, H), dtype), buffers.zeros((B, H), dtype)   # threads write their own rows
    if dh_T is not None:
        dh[...] = _as(dh_T, dtype, (B, H), "dh_T")
    if dc_T is not None:
        dc[...] = _as(dc_T, dtype, (B, H), "dc_T")
    dz = buffers.empty((T, B, 4 * H), dtype)
    dx = buffers.empty((T, B, I), dtype)
    dW = buffers.empty((I, 4 * H), dtype)
    dU = buffers.empty((H, 4 * H), dtype)
    parts = _batch_parts(B, H, dtype)
    db = buffers.zeros((parts, 4 * H), np.float64)   # one row per run, so no two threads add to one
    UTp = _packed(U, B // parts, True)
    tn = dtype == np.float32 and H % TILE_COLS == 0   # weight gradients by gemm_tn, else BLAS
    cols = _runs(4 * H, parts, TILE_COLS if tn else 1)
    sync = barrier_array(parts)
    threads.blas_single()
    threads.run_parallel(_backward_part, [
        (x, W, U, UTp, dy, dh, dc, gates, cache["hs"], cache["cs"], cache["tanh_c"], cache["lengths"], dz, dx,
         dW, dU, db[q], *gemm_tn_scratch(max(I, H) if tn else 0, (c1 - c0) // TILE_COLS, dtype), sync, q,
         r0, r1, k0, k1, c0, c1)
        for q, ((r0, r1), (k0, k1), (c0, c1)) in enumerate(zip(_runs(B, parts), _runs(T * B, parts, TILE_ROWS),
                                                                cols))], sync)
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
