"""The fast LSTM: same functions, signatures and results as `lstmkit.cells.lstm`, compiled. How the
work is split among threads and which products run where: `lstmkit.kernels.common`. Per step,
vectorised passes over each row apply the four nonlinearities at once, update c and h and store
what BPTT needs; backward, one pass per row (compiled for each H) gives the gate gradients dz. See
`lstmkit.cells.lstm` for the equations.

Buffers (time-major, as in the reference; from `buffers`, recycled between calls):

    gates  (T, B, 4H)  pre-activations, then i, f, (g+1)/2, o after their nonlinearities
    hs     (T+1, B, H) hs[0] = h0, hs[t+1] = h carried out of step t (frozen past a length)
    cs     (T+1, B, H) the same for c
    tanh_c (T, B, H)   tanh(c_t) of each step's new cell
           (inference, keep_cache=False: cs (2, B, H), a ring of two steps, hs (2, B, H) only
           h0 and the final h (h_t is read back from y_t), and tanh_c (1, B, H), one step:
           nothing per step but y is left behind)
    dz     (T, B, 4H)  gradient of the gate pre-activations (backward only)
    Wp, Up (4H/w, I or H, w)  W and U in column panels of w = 32 or 128 (empty: use BLAS), or a
                              copy per thread (the gate tile; the units split, each thread's
                              columns, with a scratch xw (threads, T, B, 4H / threads) for x W)
    UTp    (H/w, 4H, w)       U^T the same way
"""
import functools

import numpy as np

from lstmkit.kernels import buffers, threads
from lstmkit.kernels.common import (backward_args, backward_on_threads, backward_start, bptt_at, checked,
                                    finish_backward, forward_on_threads, pack_unit_columns, product, project, run_of,
                                    sequence_args, step_args, step_product)
from lstmkit.kernels.core import (SYNC_STRIDE, barrier, finished, gemm, jit, packed_gemm, row_product_with_x_w,
                                  started, vsigmoid, vtanh, wide_vectors, x_w_halves)
from lstmkit.kernels.gate_tile import ROWS, UNITS, lstm_tile, pack_by_units

threads.apply_env()


@jit(inline=True)
def _cell(z, scale, b, cp, cn, th, hn, u0):
    """One row of one step, for units u0:u0 + H: z (4H,) their pre-activations without bias, in
    the order i, f, g, o, b (4H,) their bias, scale (4H,) from `_gate_scale` -> i, f, (g+1)/2, o
    in place of z; cp C_{t-1} -> cn C_t, th tanh(C_t), hn h_t, rows of the whole layer's units
    (u0 = 0 and H all of them but where the threads split the units: `_forward_units_part`).
    Each pass reads and writes few arrays so that it vectorises."""
    wide_vectors()
    H = z.shape[0] // 4
    one, two = z.dtype.type(1.0), z.dtype.type(2.0)
    for j in range(4 * H):
        z[j] = vsigmoid(scale[j] * (z[j] + b[j]))                   # i, f, (g+1)/2, o (g = 2 sigmoid(2 z) - 1)
    i, f, gs, o = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:]
    for j in range(H):
        cn[u0 + j] = f[j] * cp[u0 + j] + i[j] * (two * gs[j] - one)   # C_t = f C_{t-1} + i C~_t
    for j in range(H):
        th[u0 + j] = vtanh(cn[u0 + j])                              # tanh(C_t)
    for j in range(H):
        hn[u0 + j] = o[j] * th[u0 + j]                              # h_t = o tanh(C_t)


@jit
def _forward_part(x, W, Wp, U, Up, UTp, fill, scale, b, gates, hs, cs, tanh_c, y, lengths, sync, q, k0, k1, block,
                  r0, r1):
    """Thread q's share of the forward: its rows of x W (`common.project`: its own batch rows, or
    rows k0:k1 of the T B rows, `block` at a time) and the recurrence of batch rows r0:r1, each
    step once its rows of x W are projected.
    x (T, B, I), W (I, 4H), U (H, 4H); Wp, Up packed (4H/w, I or H, w) or empty to use BLAS,
    packed first (and UTp after the projection) where fill says so (`common.project`); scale
    (4H,) from `_gate_scale`, b (4H,) the bias; lengths (B,) int64; sync from
    `common.projection_sync`.
    Fills hs, cs (T+1, B, H), tanh_c, y (T, B, H) and gates (T, B, 4H) with i, f, (g+1)/2, o
    (g = tanh kept as the sigmoid it is computed from); or, tanh_c (1, B, H), cs as a ring of
    two steps (step t in row t % 2) and tanh_c as one step, h_t written once, into y_t, and
    read back from there (hs: h0 in row 0, the final h in row T % 2; at 16, 200, 64, 64, three
    alternating runs each, 1.26-1.37 -> 1.18-1.30 ms, against keeping h in a ring of its own
    and copying it to y). The arrays stay whole so that every row is a contiguous vector
    (sliced batches do not vectorise)."""
    wide_vectors()
    T, B, G = gates.shape
    H = G // 4
    ring = tanh_c.shape[0] < T
    project(x, W, Wp, U, Up, UTp, fill, gates, k0, k1, block, r0, r1, sync, q)   # x_t W, all t
    for t in range(T):
        tp, tn = (t & 1, (t + 1) & 1) if ring else (t, t + 1)
        h_prev = y[t - 1] if ring and t > 0 else hs[tp]     # the ring's h_t is y_t (rows past their length: unused)
        step_product(h_prev[r0:r1], U, Up, gates[t][r0:r1], True, sync, t, B)   # z_t = x_t W + h_{t-1} U
        for r in range(r0, r1):
            cp, cn, yr = cs[tp, r], cs[tn, r], y[t, r]
            if t >= lengths[r]:
                _freeze(hs, cs, y, t, tp, tn, r, ring, 0, H)
            elif ring:
                _cell(gates[t, r], scale, b, cp, cn, tanh_c[0, r], yr, 0)
            else:
                hn = hs[tn, r]
                _cell(gates[t, r], scale, b, cp, cn, tanh_c[t, r], hn, 0)
                for j in range(H):
                    yr[j] = hn[j]
    if ring:
        _ring_final_h(hs, y, lengths, r0, r1, 0, H)
    finished(sync, q)


@jit
def _forward_tile_part(x, W, Wp, U, Up, UTp, fill, scale, b, gates, hs, cs, tanh_c, y, lengths, sync, q, k0, k1,
                       block, r0, r1):
    """Thread q's share of the forward with its steps in registers (float32, `common.uses_gate_tile`,
    fill GATE_TILE): the recurrence of batch rows r0:r1, whole 4-row tiles, each step by
    `gate_tile.lstm_tile` on W and U packed by units (H/16, I or H, 64), which the thread first
    packs into Wp[q] and Up[q], its own copies (packed once by the caller, they reached the other
    core from the caller's cache: a forward of one step at B = 16, H = 64 took 47-50 against
    42-44 µs); nothing is projected beforehand. Arguments and buffers as `_forward_part` (gates
    and tanh_c written only where the cache is kept; scale unused)."""
    started(sync, q)
    T, B, H = gates.shape[0], gates.shape[1], cs.shape[2]
    ring = tanh_c.shape[0] < T
    Wq, Uq = Wp[q], Up[q]
    pack_by_units(W, Wq)
    pack_by_units(U, Uq)
    for t in range(T):
        tp, tn = (t & 1, (t + 1) & 1) if ring else (t, t + 1)
        h_prev = y[t - 1] if ring and t > 0 else hs[tp]
        _tile_step(x, Wq, h_prev, Uq, b, cs, y if ring else hs, y, gates, tanh_c, t, tp, tn, r0, r1, ring)
        for r in range(r0, r1):
            if t >= lengths[r]:                  # the tile ran it as if within its length: undo that
                _freeze(hs, cs, y, t, tp, tn, r, ring, 0, H)
    if ring:
        _ring_final_h(hs, y, lengths, r0, r1, 0, H)
    finished(sync, q)


@jit(inline=True)
def _freeze(hs, cs, y, t, tp, tn, r, ring, u0, u1):
    """Units u0:u1 of row r at step t, past its length: c (and h, unless in a ring) carried
    unchanged, y_t = 0."""
    cp, cn, yr = cs[tp, r], cs[tn, r], y[t, r]
    for j in range(u0, u1):
        cn[j] = cp[j]
        yr[j] = 0.0
    if not ring:
        hp, hn = hs[tp, r], hs[tn, r]
        for j in range(u0, u1):
            hn[j] = hp[j]


@jit(inline=True)
def _ring_final_h(hs, y, lengths, r0, r1, u0, u1):
    """The ring ends on each row's h at its length (y there, or h0 for length 0), in row T % 2
    (units u0:u1)."""
    T = y.shape[0]
    for r in range(r0, r1):
        h, hT = y[lengths[r] - 1, r] if lengths[r] > 0 else hs[0, r], hs[T & 1, r]
        for j in range(u0, u1):
            hT[j] = h[j]


@jit
def _tile_step(x, Wu, h_prev, Uu, b, cs, hn, y, gates, tanh_c, t, tp, tn, r0, r1, ring):
    """Step t of batch rows r0:r1 (whole 4-row tiles) by `gate_tile.lstm_tile`, every row as if
    within its length: C_t into cs[tn], h_t into hn[tn] = hs[tn] and y[t] with the gates into
    gates[t] and tanh(C_t) into tanh_c[t], or, in a ring (hn = y), into y[t] alone. x (T, B, I);
    Wu, Uu: W and U packed by units (H/16, I or H, 64); h_prev (B, H) h_{t-1}; cs (T+1 or 2, B, H)."""
    B, I = x.shape[1], x.shape[2]
    H = cs.shape[2]
    th, h_row = (0, t) if ring else (t, tn)
    for u in range(0, H, UNITS):                     # a unit group's packed rows stay in L1 for all its tiles
        for r in range(r0, r1, ROWS):
            lstm_tile(x, (t * B + r) * I, I, Wu, h_prev, r * H, Uu, u // UNITS, H, b,
                      cs, (tp * B + r) * H + u, (tn * B + r) * H + u, hn, (h_row * B + r) * H + u,
                      y, (t * B + r) * H + u, not ring, gates, (t * B + r) * 4 * H + u, tanh_c, (th * B + r) * H + u)


@jit
def _forward_units_part(x, W, Wp, U, Up, xw, fill, scale, b, gates, hs, cs, tanh_c, y, lengths, sync, q, k0, k1,
                        block, r0, r1):
    """Thread q's share of a small batch's forward split by hidden units (`common.uses_units`,
    fill BY_UNITS): units u0:u1 of every row and step. Each per-step product h U reads the part of
    U of its units alone (at 1, 100, 128, 128 on two threads, 128 of the 256 KB, which one core
    reads from L2 in 1.25 against 2.3 µs), and each step ends on a barrier, as the next one's
    product reads all of h_t. The thread packs its columns of W and U (its units' gates, in the order i, f, g, o) into
    Wp[q] (32-column panels) and Up[q] (128-column ones) and projects x W into xw[q] (xw
    (threads, T, B, 4H / threads), scratch: each thread's rows contiguous, so that its passes over
    them vectorise; at batch 1, up to 8 steps ahead, in the per-step products' idle multiply-add slots:
    `core.row_product_with_x_w`), to which each step adds h_{t-1} U and which then holds the gates.
    Arguments and buffers as `_forward_part` (the gates copied there where the cache is kept)."""
    started(sync, q)
    T, B, G = gates.shape
    H = G // 4
    u0, u1 = run_of(H, sync.size // SYNC_STRIDE, q, 1)
    m = u1 - u0
    ring = tanh_c.shape[0] < T
    Wq, Uq = Wp[q], Up[q]
    pack_unit_columns(W, Wq, H, u0, u1)
    pack_unit_columns(U, Uq, H, u0, u1)
    z = xw[q]                                           # (T, B, 4m): x_t W + h_{t-1} U, then the gates
    x2, z2 = x.reshape(T * B, x.shape[2]), z.reshape(T * B, 4 * m)
    if B == 1:                                          # x W's first 8 rows; the rest beside the products
        done = x_w_halves(x2, Wq, z2, -2 * Wq.shape[0], 0)
    else:
        packed_gemm(x2, Wq, z2, False)
    own = np.empty((2, 4 * m), scale.dtype)            # the bias and scale of its columns, in their order
    for g in range(4):
        for j in range(m):
            own[0, g * m + j], own[1, g * m + j] = b[g * H + u0 + j], scale[g * H + u0 + j]
    h_own = np.empty((B, H), x.dtype)
    for t in range(T):
        tp, tn = (t & 1, (t + 1) & 1) if ring else (t, t + 1)
        h_prev = y[t - 1] if ring and t > 0 else hs[tp]
        for r in range(B):              # h_{t-1}, half of it from the other core: its lines fetched at once,
            for j in range(H):          # not one by one as the product reaches them (inference at 1, 100,
                h_own[r, j] = h_prev[r, j]   # 128, 128: 0.35-0.40 -> 0.27 ms)
        if B == 1:                                        # z_t = x_t W + h_{t-1} U (its columns)
            done = row_product_with_x_w(h_own[0], Uq, z2[t], t, x2, Wq, z2, done)
        else:
            product(h_own, U, Uq, z[t], True, False, t)
        for r in range(B):
            if t >= lengths[r]:
                _freeze(hs, cs, y, t, tp, tn, r, ring, u0, u1)
                continue
            zr, yr, hn = z[t, r], y[t, r], y[t, r] if ring else hs[tn, r]
            _cell(zr, own[1], own[0], cs[tp, r], cs[tn, r], tanh_c[0 if ring else t, r], hn, u0)
            if not ring:
                a = gates[t, r]
                for j in range(u0, u1):
                    yr[j] = hn[j]
                for g in range(4):
                    for j in range(m):
                        a[g * H + u0 + j] = zr[g * m + j]
        barrier(sync, q, t + 1)                           # h_t whole
    if ring:
        _ring_final_h(hs, y, lengths, 0, B, u0, u1)
    finished(sync, q)


@functools.lru_cache(maxsize=None)
def _backward_part(H):
    """Thread q's share of BPTT, compiled for hidden size H (cached on disk: 1.3 s the first time).
    With H fixed, the per-row pass compiles to straight vector code; with H read from the arrays,
    LLVM guards the fused loop with run-time alias checks between its 11 arrays and runs it at
    a third of that speed or less (8 rows of H = 64: 1.6 against 0.45 µs a step; split into passes
    that vectorise, 1.7), while a split loop at a fixed H takes 1.1 µs."""
    @jit
    def part(x, W, U, UTp, pack_ut, dy, dh, dc, gates, hs, cs, tanh_c, lengths, dz, dx, dW, dU, db, dbs, scratch, sync,
             q, r0, r1, c0, c1, block):
        """Thread q's share of BPTT: its batch rows r0:r1 over all steps, then its share of dx, dW
        and dU (`finish_backward`: of its own rows, or of columns c0:c1, multiples of 32 for
        `core.gemm_tn`, summed beside BPTT where block > 0). dy (T, B, H); dh, dc (B, H) carry the
        state gradients and end as dh0, dc0; gates, hs, cs, tanh_c from forward; UTp U^T packed
        (H/w, 4H, w; by the threads where pack_ut) or empty to use BLAS; dbs the threads' own bias
        sums and scratch the buffers of `finish_backward`. Fills dz (T, B, 4H) and its share of dx
        (T, B, I), dW (I, 4H), dU (H, 4H) and db (4H,)."""
        dbq = backward_start(U, UTp, pack_ut, dbs, db, sync, q)     # (run_parallel's caller may go on)
        wide_vectors()
        T, G = gates.shape[0], 4 * H
        one, two = gates.dtype.type(1.0), gates.dtype.type(2.0)
        for t in range(T - 1, -1, -1):
            for r in range(r0, r1):
                d = dz[t, r]
                if t >= lengths[r]:          # no step here: dz = 0, dh and dc pass through unchanged
                    for j in range(G):
                        d[j] = 0.0
                    continue
                a, cp, th, dyr, dhr, dcr = gates[t, r], cs[t, r], tanh_c[t, r], dy[t, r], dh[r], dc[r]
                for j in range(H):
                    i, f, o = a[j], a[H + j], a[3 * H + j]
                    g = two * a[2 * H + j] - one                        # C~_t from (g+1)/2
                    dh_t = dhr[j] + dyr[j]                              # h_t reached y_t and step t+1
                    dc_t = dcr[j] + dh_t * o * (one - th[j] * th[j])    # + through h_t = o tanh(C_t)
                    d[j] = dc_t * g * i * (one - i)                     # C_t = f C_{t-1} + i C~_t
                    d[H + j] = dc_t * cp[j] * f * (one - f)
                    d[2 * H + j] = dc_t * i * (one - g * g)
                    d[3 * H + j] = dh_t * th[j] * o * (one - o)
                    dcr[j] = dc_t * f                                   # to C_{t-1}
                    dhr[j] = 0.0                                        # the gemm below adds dz_t U^T
                for j in range(G):
                    dbq[j] += d[j]
            product(dz[t][r0:r1], U, UTp, dh[r0:r1], True, True, t)   # dh_{t-1} = dz_t U^T (+ frozen)
            bptt_at(sync, q, t)
        finish_backward(x, hs, dz, dz, W, dx, dW, dU, db, dbs, scratch, sync, q, r0, r1, c0, c1, block) # dx, dW, dU, db
    return part


@functools.lru_cache(maxsize=64)
def _gate_scale(H, dtype):
    """scale (4H,) so that sigmoid(scale * (z + b)) gives i, f, (tanh+1)/2, o from the
    pre-activation z without bias: 2 on the g block (tanh(x) = 2 sigmoid(2x) - 1), 1 elsewhere.
    (One array per H and dtype, never written.)"""
    scale = np.ones(4 * H, dtype)
    scale[2 * H:3 * H] = 2
    return scale


@jit
def _step(x, h, c, W, U, scale, b):
    """One step: x (B, I), h, c (B, H) -> new h, c (B, H)."""
    B, H = h.shape
    z, h_out, c_out = np.empty((B, 4 * H), x.dtype), np.empty((B, H), x.dtype), np.empty((B, H), x.dtype)
    th = np.empty(H, x.dtype)
    gemm(x, W, z, 0.0, False, False)
    gemm(h, U, z, 1.0, False, False)
    for r in range(B):
        _cell(z[r], scale, b, c[r], c_out[r], th, h_out[r], 0)
    return h_out, c_out


# --- the public functions --------------------------------------------------------------------------

def _bias_shape(H):
    return (4 * H,)


def lstm_forward(x, W, U, b, h0=None, c0=None, lengths=None, keep_cache=True):
    """Run the LSTM over x (T, B, I).

    Returns y (T, B, H) every hidden state, (h_T, c_T) each (B, H), and the cache for backward,
    or None where keep_cache is False (inference: h and c of only two steps are kept, tanh(c)
    of one, and U^T is not packed; at 16, 200, 64, 64 the forward took 1.15-1.21 against
    1.22-1.28 ms).
    """
    x, W, U, b, lens, H = sequence_args(x, W, U, b, lengths, 4, _bias_shape)
    T, B, _ = x.shape
    dtype = x.dtype
    kept = T if keep_cache else 1                  # steps of tanh_c; of h and c, kept + 1
    gates, hs, cs, tanh_c = buffers.empty_group(((T, B, 4 * H), dtype), ((kept + 1, B, H), dtype),
                                                ((kept + 1, B, H), dtype), ((kept, B, H), dtype))   # the cache's
    hs[0] = 0 if h0 is None else checked(h0, dtype, (B, H), "h0")
    cs[0] = 0 if c0 is None else checked(c0, dtype, (B, H), "c0")
    y = buffers.empty((T, B, H), dtype)
    UTp = forward_on_threads(_forward_part, x, W, U, (_gate_scale(H, dtype), b, gates, hs, cs, tanh_c, y), lens,
                             keep_cache, _forward_tile_part, _forward_units_part)
    last = T if keep_cache else T % 2
    finals = hs[last].copy(), cs[last].copy()
    if not keep_cache:
        return y, finals, None
    return y, finals, dict(x=x, W=W, U=U, UTp=UTp, gates=gates, hs=hs, cs=cs, tanh_c=tanh_c, lengths=lens)


def lstm_backward(dy, dh_T, dc_T, cache):
    """Backpropagation through time.

    dy (T, B, H) is the gradient of the outputs; dh_T, dc_T (B, H) of the final state (or None).
    Returns dx (T, B, I), dW (I, 4H), dU (H, 4H), db (4H,), dh0 (B, H), dc0 (B, H).
    """
    dy, (dh, dc) = backward_args(dy, cache, dh_T=dh_T, dc_T=dc_T)
    dz = buffers.empty(cache["gates"].shape, dy.dtype)
    dx, dW, dU, db = backward_on_threads(_backward_part(dh.shape[1]), cache, (
        dy, dh, dc, cache["gates"], cache["hs"], cache["cs"], cache["tanh_c"], cache["lengths"], dz), dz.shape[2:])
    return dx, dW, dU, db, dh, dc


def lstm_step(x, h, c, W, U, b):
    """One step for streaming inference: x (B, I), h and c (B, H) -> new (h, c)."""
    x, W, U, b, (h, c) = step_args(x, W, U, b, 4, _bias_shape, h=h, c=c)
    return _step(x, h, c, W, U, _gate_scale(U.shape[0], x.dtype), b)
