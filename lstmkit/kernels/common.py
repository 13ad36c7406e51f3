"""What the fast LSTM, GRU and tanh RNN share: argument checks, how a call's work is split among
the threads, weights packed for the register tile, and the products.

Each call starts one compiled function per thread, once (`forward_on_threads`,
`backward_on_threads`): no Python, no allocation and no thread start per step.

forward   x_t W for all steps (`project`: `core.packed_gemm` on W packed into column panels up
          to I = 512, each thread its own batch rows; BLAS beyond, each thread a block of the T B
          rows, published as it goes); then the recurrence of the thread's own batch rows
          (`runs`), each step once its rows of x W are there (`step_product`): rows never meet
          inside a layer, so no thread waits for another inside the time loop (but in the
          units split of small batches, below). The per-step
          product (`product`) uses an 8 x 32 register tile on U packed once per call
          for float32 runs of 8 rows or more, a 1 x 128 one for smaller batches (when the columns
          fill the panels), else BLAS; float64 uses BLAS.
backward  BPTT of the thread's batch rows, then the products over all steps
          (`finish_backward`): where the weight gradients are small, each thread's own rows (its
          rows of dx = dxw W^T on W^T packed, and a partial [dW; dU] = [x h_{t-1}]^T dz by
          `core.gemm_tn`, summed over the threads after one barrier); else, after one barrier
          (they read every row), its share: rows of dx (BLAS) and column panels of dW = x^T dxw
          and dU = h_{t-1}^T dhu (`core.gemm_tn` for float32 with H a multiple of 32, else BLAS).
small     A batch too small to split among the threads (`batch_parts`) runs its recurrence on one
batches   thread while a second projects x W ahead of it (forward) or sums dW and dU over the
          steps BPTT has finished (backward): `forward_plan`, `backward_plan`. The LSTM's forward
          with a large U splits the hidden units among the threads instead, with a barrier a
          step (`uses_units`).
"""
import functools
import math

import numpy as np

from lstmkit.kernels import buffers, gate_tile, threads
from lstmkit.kernels.core import (RELEASED, RETURN_AT_ONCE, ROW_COLS, SYNC_STRIDE, TILE_COLS, TILE_ROWS, barrier,
                                  barrier_array, finished, gemm, gemm_tn, gemm_tn_scratch, jit, load_acquire, pack,
                                  packed_gemm, spin_turn, started, store_release, wide_vectors)

PROJECTION_TILE_MAX_I = 512   # x W goes to the packed tile up to this I, to BLAS beyond (faster there)


# --- argument checks ------------------------------------------------------------------------------

def _array(x, layout, ndim, nonempty):
    """x as a C-contiguous float32 or float64 array of ndim axes (layout names them), none of
    them empty where nonempty."""
    if not _ready(x, x.dtype if type(x) is np.ndarray else None):
        dtype = np.asarray(x).dtype
        if dtype not in _FLOATS:
            raise ValueError(f"x must be float32 or float64, got {dtype}; convert it with x.astype(np.float32)")
        x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim != ndim or (nonempty and 0 in x.shape):
        raise ValueError(f"x must be {layout}, got shape {x.shape}")
    return x


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _ready(a, dtype):
    """Whether a is already a C-contiguous ndarray of dtype (a float type): the common case,
    checked without a NumPy call (each costs microseconds in the cold Python around a kernel)."""
    return type(a) is np.ndarray and a.dtype == dtype and dtype in _FLOATS and a.flags.c_contiguous


def checked(a, dtype, shape, name):
    """a as a C-contiguous array of dtype, which must have shape."""
    if not _ready(a, dtype):
        a = np.ascontiguousarray(a, dtype=dtype)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def step_args(x, W, U, b, gates, bias_shape, **states):
    """The arguments of one step, checked: x (B, I), W, U, b as in `weights`, and the states
    (each (B, H)) given by name. Returns x, W, U, b and the list of states. (The step's BLAS
    products run on one thread, as the kernels' do.)"""
    x = _array(x, "(batch, features) for one step", 2, nonempty=False)
    B, I = x.shape
    W, U, b, H = weights(W, U, b, I, x.dtype, gates, bias_shape)
    threads.blas_single()
    return x, W, U, b, [checked(s, x.dtype, (B, H), name) for name, s in states.items()]


def backward_args(dy, cache, **state_grads):
    """dy (T, B, H) checked against the forward's cache, and the gradients of the final states
    given by name (None for zeros) as fresh aligned arrays (one block) that BPTT carries back in
    place, each thread in its own rows. Returns dy and the list of state gradients."""
    T, B, _ = cache["x"].shape
    H = cache["U"].shape[0]
    dtype = cache["x"].dtype
    grads = buffers.empty_group(*[((B, H), dtype)] * len(state_grads))
    for out, (name, d) in zip(grads, state_grads.items()):
        if d is None:
            out.fill(0)
        else:
            out[...] = checked(d, dtype, (B, H), name)
    return checked(dy, dtype, (T, B, H), "dy"), grads


def weights(W, U, b, I, dtype, gates, bias_shape):
    """W (I, gates H), U (H, gates H) and b (bias_shape(H)) checked; returns them and H."""
    if not _ready(U, dtype):
        U = np.ascontiguousarray(U, dtype=dtype)
    if U.ndim != 2 or U.shape[1] != gates * U.shape[0] or U.shape[0] == 0:
        raise ValueError(f"U must be (H, {gates}H) with H >= 1, got shape {U.shape}")
    H = U.shape[0]
    return checked(W, dtype, (I, gates * H), "W"), U, checked(b, dtype, bias_shape(H), "b"), H


def sequence_args(x, W, U, b, lengths, gates, bias_shape):
    """x (T, B, I), W (I, gates H), U (H, gates H), b (bias_shape(H)) and lengths, checked;
    returns them and H."""
    x = _array(x, "time-major (time, batch, features) with no empty axis", 3, nonempty=True)
    T, B, I = x.shape
    W, U, b, H = weights(W, U, b, I, x.dtype, gates, bias_shape)
    return x, W, U, b, lengths_of(lengths, T, B), H


def lengths_of(lengths, T, B):
    """The lengths (B,) as int64 (all T when None), checked."""
    if lengths is None:
        return _full_lengths(T, B)
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be {B} integers (one per sequence), got {lengths!r}")
    if np.any(lengths < 0) or np.any(lengths > T):
        raise ValueError(f"lengths must lie in [0, {T}] (the number of time steps), got {lengths.tolist()}")
    return lengths.astype(np.int64)


@functools.lru_cache(maxsize=256)
def _full_lengths(T, B):
    """lengths (B,) all T: one array per T and B, shared by the calls (never written)."""
    return np.full(B, T, np.int64)


# --- the split among threads ----------------------------------------------------------------------

def batch_parts(B, H, G, dtype):
    """How many threads run the recurrence side by side, each on its own run of batch rows. Each
    run needs the 8 rows of a packed tile (float32) and enough work per step to pay for a thread
    (a rule of thumb, measured: a per-step product h U (H, G) of >= 0.3 MFLOP; at 16, 200, 64, 64
    two threads take a GRU training step from 5.1 to 3.8 ms, an LSTM's from 6.4 to 4.4)."""
    n = threads.get_num_threads()
    if n == 1 or 2 * B * H * G < 3e5:
        return 1
    return max(1, min(n, B // TILE_ROWS) if dtype == np.float32 else min(n, B))


def runs(n, parts, multiple=1):
    """parts runs (lo, hi) covering 0..n, their bounds multiples of `multiple` but the last."""
    return [run_of(n, parts, q, multiple) for q in range(parts)]


@jit
def run_of(n, parts, q, multiple):
    """Run q of `runs`(n, parts, multiple)."""
    lo = q * n // parts // multiple * multiple
    return lo, (n if q == parts - 1 else (q + 1) * n // parts // multiple * multiple)


# --- packed weights -------------------------------------------------------------------------------

def packed_shape(shape, dtype, rows, transpose):
    """The shape of U (K, N) of shape and dtype (or U^T for U (N, K) when transpose) packed by
    `core.pack` for products with `rows` rows: for float32, 32-column panels for 8 rows or more,
    128-column panels for fewer; None where BLAS does the product (float64, or columns that do
    not fill the panels)."""
    K, N = shape[::-1] if transpose else shape
    width = TILE_COLS if rows >= TILE_ROWS else ROW_COLS
    return (N // width, K, width) if dtype == np.float32 and N % width == 0 else None


def projection_shape(shape, dtype, rows):
    """The shape of W (shape, dtype) packed for x W over `rows` rows, or None (BLAS) beyond
    PROJECTION_TILE_MAX_I."""
    return packed_shape(shape, dtype, rows, False) if shape[0] <= PROJECTION_TILE_MAX_I else None


@jit
def pack_unit_columns(M, packed, H, u0, u1):
    """Lay out the columns of units u0:u1 of M (K, g H), g gates of H units each, as packed
    (g (u1 - u0) / w, K, w) column panels (`core.pack`): the units' columns of the first gate,
    then of the second, and so on. Copies runs of one gate's columns on flat arrays by unsigned
    offsets, which vectorise (with slices, or with signed indices, which Numba checks for
    wrapping: 18-19 against 6.4 µs for the whole of a 128 x 512 U)."""
    P, K, w = packed.shape
    G, m = M.shape[1], u1 - u0
    src, dst = M.reshape(-1), packed.reshape(-1)
    for p in range(P):
        for k in range(K):
            j = 0
            while j < w:
                c = p * w + j
                n = min(w - j, m - c % m)
                a, b = np.uint64(k * G + c // m * H + u0 + c % m), np.uint64((p * K + k) * w + j)
                for i in range(np.uint64(n)):
                    dst[b + i] = src[a + i]
                j += n


@functools.lru_cache(maxsize=None)
def use_blas(dtype):
    """The empty packed array that tells a compiled part to use BLAS for a product (one per dtype:
    it has nothing to write)."""
    return np.empty((0, 0, TILE_COLS), dtype)


def _by_gemm_tn(H, dtype):
    """Whether the weight gradients go to `core.gemm_tn` (float32, H a multiple of 32), else BLAS."""
    return dtype == np.float32 and H % TILE_COLS == 0


def weight_grad_scratch(M, H, cols, dtype):
    """The (shape, dtype) of gemm_tn's scratch for a thread's columns cols = (c0, c1) of the
    weight gradients, M rows of a (I + H for a thread's own rows, where the LSTM and RNN do dW and
    dU as one product, else max(I, H)), or of empty arrays when they go to BLAS or the thread has
    none."""
    by_gemm_tn = _by_gemm_tn(H, dtype) and cols[1] > cols[0]
    return gemm_tn_scratch(M if by_gemm_tn else 0, (cols[1] - cols[0]) // TILE_COLS, dtype)


def weight_grad_columns(G, H, parts, dtype):
    """The runs of the G weight-gradient columns the threads take: whole 32-column panels for
    gemm_tn, else any."""
    return runs(G, parts, TILE_COLS if _by_gemm_tn(H, dtype) else 1)


# --- the calls on the threads ---------------------------------------------------------------------

def forward_on_threads(part, x, W, U, cell_args, lengths, for_backward=True, tile_part=None, units_part=None):
    """Run part(x, W, Wp, U, Up, UTp, fill, *cell_args, lengths, sync, q, k0, k1, block, r0, r1)
    on the threads as `forward_plan` splits the work: thread q projects x W for its batch rows
    r0:r1 of every step (fill PROJECT_OWN) or rows k0:k1 of the T B rows, `block` rows at a time,
    and runs the recurrence of batch rows r0:r1, each step once its rows are projected
    (`project`, `step_product`). x (T, B, I), W (I, G), U (H, G). Where `uses_gate_tile` says so,
    the LSTM's tile_part (same arguments) runs instead, its rows' steps in registers (fill
    GATE_TILE: nothing projected beforehand; Wp and Up (threads, H/16, I or H, 64) take each
    thread's own copy of W and U packed by `gate_tile.pack_by_units`, which it packs first).
    Where `uses_units` says so, the LSTM's units_part runs instead, each thread on its units of
    every row (fill BY_UNITS: Wp and Up (threads, 4H / threads / w, I or H, w) take its columns of W
    and U packed by `pack_unit_columns`, which it packs first; a scratch (threads, T, B, 4H /
    threads) for x W is passed in place of UTp).

    Beside a small batch's recurrence each thread packs what it uses (fill: PACK_* bits), and
    the projecting thread also packs U^T for the backward (unless not for_backward), returned
    (else None). Otherwise (neither in registers nor beside a small batch) W and U are packed
    here, once for all threads."""
    T, B, I = x.shape
    specs, ut_shape, jobs, sync_start, pipelined = _forward_layout(T, B, I, *U.shape, x.dtype,
                                                                   threads.get_num_threads(), for_backward,
                                                                   tile_part is not None, units_part is not None)
    Wp, Up, sync, *scratch = buffers.empty_group(*specs)
    UTp = buffers.empty(ut_shape, x.dtype) if ut_shape else use_blas(x.dtype)   # (kept by the cache)
    sync[:] = sync_start
    fill = jobs[0][1]
    if not fill & (GATE_TILE | BY_UNITS) and not pipelined:   # (the threads pack what they use otherwise)
        if Wp.size:
            pack(W, Wp, False)
        if Up.size:
            pack(U, Up, False)
    threads.blas_single()
    threads.run_parallel(tile_part if fill & GATE_TILE else units_part if fill & BY_UNITS else part,
                         [(x, W, Wp, U, Up, scratch[0] if scratch else UTp, fill, *cell_args, lengths, sync, *job)
                          for job, fill in jobs], sync)
    return UTp if ut_shape else None


@functools.lru_cache(maxsize=256)
def _forward_layout(T, B, I, H, G, dtype, n_threads, for_backward, in_registers=False, by_units=False):
    """What `forward_on_threads` does for these shapes on n_threads, worked out once (the Python
    around a call runs with cold caches, microseconds per operation): the (shape, dtype) of W and
    U packed (empty: BLAS or not packed) and of sync (then of the units path's scratch), the shape
    of U^T packed for the backward (or None: not packed here, or not for_backward), each thread's
    (q, k0, k1, block, r0, r1) and fill, what sync starts as, and whether the small-batch
    pipeline runs."""
    parts = batch_parts(B, H, G, dtype)
    if by_units and uses_units(B, H, G, dtype, n_threads, parts):
        jobs = tuple(((q, 0, 0, T * B, 0, B), BY_UNITS) for q in range(n_threads))
        columns = G // n_threads                      # each thread's, in panels of TILE_COLS and ROW_COLS
        sync = projection_sync([(0, 0)] * n_threads)
        specs = (((n_threads, columns // TILE_COLS, I, TILE_COLS), dtype),          # W
                 ((n_threads, columns // ROW_COLS, H, ROW_COLS), dtype),            # U
                 (sync.shape, sync.dtype), ((n_threads, T, B, columns), dtype))     # x W
        return specs, None, jobs, sync, False
    if in_registers and uses_gate_tile(B, I, H, dtype, parts):
        jobs = tuple(((q, 0, 0, T * B, r0, r1), GATE_TILE) for q, (r0, r1) in enumerate(runs(B, parts)))
        shapes = tuple((parts, H // gate_tile.UNITS, K, gate_tile.WIDTH) for K in (I, H))   # a copy per thread
        sync = projection_sync([(0, 0)] * parts)
        return tuple((shape, dtype) for shape in shapes) + ((sync.shape, sync.dtype),), None, jobs, sync, False
    w_shape, u_shape = projection_shape((I, G), dtype, T * B), packed_shape((H, G), dtype, B // parts, False)
    projections, batch_runs, block, own = forward_plan(T, B, I, G, parts, w_shape is not None)
    pipelined = len(batch_runs) > parts
    ut_shape = packed_shape((H, G), dtype, B, True) if pipelined and for_backward else None
    sync = projection_sync(projections)
    if pipelined and I <= H and RETURN_AT_ONCE_FLOPS[0] <= 2 * T * B * H * G <= RETURN_AT_ONCE_FLOPS[1]:
        sync[SYNC_STRIDE + RETURN_AT_ONCE] = 1           # (the projecting thread ends long before)
    packs = tuple((shape or (0, 0, TILE_COLS), dtype) for shape in (w_shape, u_shape))
    stream = STREAM_X_W if T * B * G * np.dtype(dtype).itemsize >= parts * STREAM_MIN_BYTES else 0
    fills = [PACK_U if u_shape else 0, PACK_W | (PACK_UT if ut_shape else 0)] if pipelined else \
        [PROJECT_OWN | stream if own else 0] * parts
    jobs = tuple(((q, k0, k1, block, r0, r1), fill)
                 for q, ((k0, k1), (r0, r1), fill) in enumerate(zip(projections, batch_runs, fills)))
    return packs + ((sync.shape, sync.dtype),), ut_shape, jobs, sync, pipelined


GATE_TILE_MAX_BYTES = 1 << 17   # W and U (float32) up to this size: the step in registers where it fits


def uses_gate_tile(B, I, H, dtype, parts):
    """Whether an LSTM forward runs its steps in `gate_tile.lstm_tile`: float32, the batch split
    among threads (a batch too small to split runs x W beside its recurrence instead) in runs of
    whole 4-row tiles, H a multiple of 16 and W and U small enough that a unit group's packed rows
    stay near the core (GATE_TILE_MAX_BYTES; at 16, 200, 64, 64, 128 KB: inference 1.19-1.39 ->
    0.91-1.06 ms, the training forward 1.34-1.47 -> 1.12-1.14)."""
    return (dtype == np.float32 and parts > 1 and H % gate_tile.UNITS == 0
            and all((r1 - r0) % gate_tile.ROWS == 0 for r0, r1 in runs(B, parts))
            and (I + H) * 4 * H * 4 <= GATE_TILE_MAX_BYTES)


# A thread's part of U from this size on (float32, the LSTM, two threads: H >= 128) splits a small batch's
# forward by units. Inference at batch 1, T = 100, alternating runs: H = 128 (128 KB a thread) 302-315 ->
# 265 µs, 4 x 128 1.11 -> 0.93-0.95 ms, 7 x 512 (T = 50) 14.9 -> 11.7-11.8; H = 64 (32 KB a thread) 103 ->
# 133-198 µs: there the barrier and h's lines from the other core cost more than reading half of U saves.
UNITS_MIN_BYTES = 1 << 16


def uses_units(B, H, G, dtype, n_threads, parts):
    """Whether an LSTM forward splits its units among the threads (`lstm._forward_units_part`):
    float32, a batch too small to split (parts 1) and under the TILE_ROWS rows of the packed tile
    (one-row products, which read U from L2 as fast as L2 delivers it), each thread's columns of
    U filling whole ROW_COLS-column panels and at least UNITS_MIN_BYTES, and no more threads than
    the cores this process may run on (a barrier a step waits for every thread: with three on two
    cores, 5.9 against 0.48 ms on two at 1, 100, 32, 192)."""
    return (dtype == np.float32 and 1 < n_threads <= threads.cores() and parts == 1 and B < TILE_ROWS
            and G % (n_threads * ROW_COLS) == 0 and H * G * 4 // n_threads >= UNITS_MIN_BYTES)


def forward_plan(T, B, I, G, parts, packed_w):
    """The row runs of x W each thread projects, published as it goes, the batch runs of the
    recurrence of each thread, the rows projected at a time, and whether each thread projects
    its own batch rows instead. With parts threads on the batch and W packed, each projects x_t W
    for its own batch rows of every step (PROJECT_OWN: rows another core projected reach it one
    cache miss at a time; at 32, 100, 256, 256 inference 0.93-0.94 -> 0.97-0.99 of PyTorch's
    speed); by BLAS (W not packed), each projects a run of T B rows at once (BLAS would repack W
    for every step). A batch too small to split (parts 1) runs the recurrence on one thread while
    a second projects the steps ahead of it, B rows rounded up to whole 8-row tiles at a time,
    given W packed and at least PIPELINE_MIN_FLOPS of x W (at 1, 100, 128, 128 the forward
    takes 0.27 ms against 0.38 on one thread)."""
    if parts == 1 and threads.get_num_threads() > 1 and packed_w and 2 * T * B * I * G >= PIPELINE_MIN_FLOPS:
        return [(0, 0), (0, T * B)], [(0, B), (B, B)], -(-B // TILE_ROWS) * TILE_ROWS, False
    if packed_w:
        return [(0, 0)] * parts, runs(B, parts), T * B, True
    return runs(T * B, parts, TILE_ROWS), runs(B, parts), T * B, False


def backward_on_threads(part, cache, cell_args, bias_shape):
    """Run part(x, W, U, UTp, pack_ut, *cell_args, dx, dW, dU, db, dbs, scratch, sync, q, r0, r1,
    c0, c1, block) on the threads as `backward_plan` splits the work, x, W, U from the forward's
    cache: thread q starts with `backward_start` (packing its share of U^T where pack_ut), runs
    BPTT of batch rows r0:r1, adding to its own row of dbs (float64), then its share of dx, dW and
    dU and the sum of dbs into db (`finish_backward`, with scratch its buffers). Returns dx (T, B,
    I), dW (I, G), dU (H, G) and db (bias_shape)."""
    x, W, U = cache["x"], cache["W"], cache["U"]
    T, B, I = x.shape
    grad_specs, call_specs, jobs, sync_start, ut_shape = _backward_layout(
        T, B, I, *U.shape, x.dtype, bias_shape, threads.get_num_threads())
    dx, dW, dU, db = buffers.empty_group(*grad_specs)               # one block: any of them keeps it
    dbs, sync, partials, WTp, *scratch = buffers.empty_group(*call_specs)   # this call's
    sync[:] = sync_start
    UTp = cache.get("UTp")                                          # packed by the forward, if its layout fits
    pack_ut = ut_shape is not None and (UTp is None or UTp.shape != ut_shape)
    if ut_shape is None:
        UTp = use_blas(x.dtype)
    elif pack_ut:
        UTp = buffers.empty(ut_shape, x.dtype)
    threads.blas_single()
    threads.run_parallel(part, [(x, W, U, UTp, pack_ut, *cell_args, dx, dW, dU, db, dbs,
                                 (*scratch[2 * q:2 * q + 2], WTp, partials), sync, *job)
                                for q, job in enumerate(jobs)], sync)
    return dx, dW, dU, db


@functools.lru_cache(maxsize=256)
def _backward_layout(T, B, I, H, G, dtype, bias_shape, n_threads):
    """What `backward_on_threads` does for these shapes on n_threads, worked out once (as
    `_forward_layout`): the (shape, dtype) of dx, dW, dU and db, and of the threads' db (float64),
    sync, the threads' partial weight gradients and copies of W^T packed (`finish_backward`;
    empty unless each thread does its own rows) and each thread's gemm_tn scratch, each thread's
    (q, r0, r1, c0, c1, block), what sync starts as, and the shape of U^T packed (or None)."""
    parts = batch_parts(B, H, G, dtype)
    batch_runs, columns, blocks, own = backward_plan(T, B, I, H, G, parts, dtype)
    sync = barrier_array(len(batch_runs))
    sync[BPTT_AT::SYNC_STRIDE] = T                    # (no BPTT step done yet)
    grad_specs = (((T, B, I), dtype), ((I, G), dtype), ((H, G), dtype), (bias_shape, dtype))
    wt_shape = packed_shape((I, G), dtype, TILE_ROWS, True) if own else (0, 0, TILE_COLS)
    bias_row = -(-math.prod(bias_shape) * 8 // buffers.PAGE) * buffers.PAGE // 8   # whole pages of float64
    call_specs = [((len(batch_runs), bias_row), np.float64), (sync.shape, sync.dtype),
                  ((parts, I + H, G) if own else (0, 0, 0), dtype), ((len(batch_runs), *wt_shape), dtype)]
    rows = I + H if own else max(I, H)
    for (c0, c1), block in zip(columns, blocks):
        call_specs += weight_grad_scratch(rows, H, (0, G) if block or own else (c0, c1), dtype)
    jobs = tuple((q, r0, r1, c0, c1, block)
                 for q, ((r0, r1), (c0, c1), block) in enumerate(zip(batch_runs, columns, blocks)))
    return grad_specs, tuple(call_specs), jobs, sync, packed_shape((H, G), dtype, B // parts, True)


def backward_plan(T, B, I, H, G, parts, dtype):
    """The batch runs of BPTT of each thread, the runs of the columns of dW and dU each sums after
    BPTT, the steps per block of the sums a thread does beside BPTT (0: none), and whether each
    thread does the products of its own batch rows. With parts threads on the batch, each does
    the products of its own rows where their partial dW and dU are small (OWN_GRADS_MAX_BYTES;
    gemm_tn, W^T packed: at 32, 100, 256, 256, 2 MB each, the backward 3% faster; at 64, 100,
    512, 512, 8 MB, 2-3% slower), else its columns of dW and dU over all rows. A batch too small
    to split (parts 1) runs BPTT on one thread while a second sums all of dW and dU over the
    steps BPTT has finished, block by block in a fixed order (so that the sums do not depend on
    timing), given at least PIPELINE_MIN_FLOPS of products (at 1, 100, 128, 128 the backward
    takes 0.41 ms against 0.61 on one thread)."""
    if parts == 1 and threads.get_num_threads() > 1 and 4 * T * B * (I + H) * G >= PIPELINE_MIN_FLOPS:
        return [(0, B), (B, B)], [(0, 0), (0, 0)], [0, -(-PIPELINE_ROWS // B)], False
    own = parts > 1 and _by_gemm_tn(H, dtype) and packed_shape((I, G), dtype, TILE_ROWS, True) is not None and \
        (I + H) * G * np.dtype(dtype).itemsize <= OWN_GRADS_MAX_BYTES
    return runs(B, parts), weight_grad_columns(G, H, parts, dtype), [0] * parts, own


# --- the products at either end of a sequence -----------------------------------------------------

PROJECTED, PROJECT_FROM, PROJECT_TO = 3, 4, 5   # slots of a thread's line in sync (core's use 0-2)
BPTT_AT = 6                                     # slot: the step a thread's BPTT has reached
PIPELINE_MIN_FLOPS = 2e6     # products worth a thread of their own beside a recurrence on one thread
PIPELINE_ROWS = 16           # T B rows per block of the weight gradients' products beside BPTT
RETURN_AT_ONCE_FLOPS = (4e6, 4e7)   # a recurrence beside the projection this long (about 0.05-0.5 ms at batch
                                    # 1), with I <= H, outlasts the projecting thread (which takes 8 steps at a
                                    # time) by far more than its return to Python, and by less than its spin
                                    # after a job (`core.finished`, `threads._Crew`)
OWN_GRADS_MAX_BYTES = 1 << 22   # a thread's partial dW and dU up to this size: products of its own rows


def projection_sync(projections):
    """The barrier array of the threads that project the row runs (k0, k1) of x W, with each
    thread's run and progress (none yet) filled in for `step_product`."""
    sync = barrier_array(len(projections))
    for q, (k0, k1) in enumerate(projections):
        line = q * SYNC_STRIDE
        sync[line + PROJECTED], sync[line + PROJECT_FROM], sync[line + PROJECT_TO] = k0, k0, k1
    return sync


PACK_W, PACK_U, PACK_UT = 1, 2, 4   # what a thread packs in `project` beside a small batch
PROJECT_OWN = 8                     # ... or: it projects its own batch rows, for its own recurrence
STREAM_X_W = 16                     # ... by non-temporal stores (`core.packed_gemm`)
GATE_TILE = 32                      # ... or nothing: its steps run in `gate_tile.lstm_tile`
BY_UNITS = 64                       # ... or its own units of every row (`uses_units`)
STREAM_MIN_BYTES = 1 << 22          # a thread's x W from this size on (twice the L2 here). Inference forward:
                                    # at 64, 100, 512, 512 (26 MB) 85.9-87.3 against 88.7-90.4 ms, at 32 x 256
                                    # (6.5 MB) 11.4-11.8 against 12.0-12.1; training forward 88.9-91.6 against
                                    # 94.1-95.3 and 12.5 against 13.5-13.7; at 16, 200, 64, 64 (1.6 MB, which
                                    # stays in L2 until its steps run) 1.34-1.42 against 1.18-1.23 ms


@jit
def project(x, W, Wp, U, Up, UTp, fill, out, k0, k1, block, r0, r1, sync, q):
    """The start of thread q's forward part: says it has started (`core.started`), packs U into Up
    and W into Wp where fill says so (for its own use), then projects out = x W: its batch rows
    r0:r1 of every step where fill says PROJECT_OWN (by non-temporal stores where it also says
    STREAM_X_W), and its rows k0:k1 of the T B rows, `block` rows at a time, each block published
    in sync when done (for `step_product`), then packs U^T into UTp where fill says so (for the
    backward). x (T, B, I), out (T, B, G); W packed as Wp or, Wp empty, by BLAS."""
    started(sync, q)
    if fill & PACK_U:
        pack(U, Up, False)
    if fill & PACK_W:
        pack(W, Wp, False)
    x2, out2 = x.reshape(-1, x.shape[2]), out.reshape(-1, out.shape[2])
    stream = fill & STREAM_X_W != 0
    if fill & PROJECT_OWN and r1 - r0 == x.shape[1]:    # (W is packed: `forward_plan`)
        packed_gemm(x2, Wp, out2, False, stream)          # the whole batch: one product of T B rows
    elif fill & PROJECT_OWN:
        packed_gemm(x[:, r0:r1], Wp, out[:, r0:r1], False, stream)
    for a in range(k0, k1, block):
        b = min(k1, a + block)
        product(x2[a:b], W, Wp, out2[a:b], False, False)
        store_release(sync, q * SYNC_STRIDE + PROJECTED, b)
    if fill & PACK_UT:
        pack(U, UTp, True)


ALTERNATE_MAX_BYTES = 1 << 20   # one-row products alternate their direction on U up to this size (at 1, 100,
                                # 128, 128, 256 KB, inference 0.264-0.274 -> 0.256-0.262 ms; one core, 1 x 256
                                # @ 256 x 1024, 1 MB: 6.7-7.0 -> 6.5-6.6 µs a product). On 8-row tiles, which
                                # are bound by their arithmetic, no gain was measured


@jit
def step_product(h, U, Up, out, accumulate, sync, t, B):
    """out (+)= h U for a thread's rows of forward step t of B rows a step (`product`), once the
    first (t + 1) B rows of x W are projected, by whichever threads project them (out may hold
    them)."""
    rows = (t + 1) * B
    for p in range(sync.size // SYNC_STRIDE):
        line = p * SYNC_STRIDE
        if sync[line + PROJECT_FROM] < rows:
            need = min(rows, sync[line + PROJECT_TO])
            spins = 0
            while load_acquire(sync, line + PROJECTED) < need:
                spins = spin_turn(spins)
    product(h, U, Up, out, accumulate, False, t)


@jit
def product(a, U, Up, out, accumulate, transpose, t=0):
    """out (+)= a @ U (U^T when transpose) on U (or U^T) packed as Up, or, Up empty, by BLAS: the
    per-step products of a thread's rows (of step t), and x W. Added to out where accumulate,
    else written. One-row products (Up in panels of ROW_COLS, which read Up from L2 as fast as
    L2 delivers it) run k downwards on odd steps where Up has at most ALTERNATE_MAX_BYTES
    (`core.packed_gemm`'s descending): each starts on the part of Up the step before ended on,
    still in L1."""
    if Up.shape[0]:
        alternate = Up.shape[2] == ROW_COLS and Up.size * Up.itemsize <= ALTERNATE_MAX_BYTES
        packed_gemm(a, Up, out, accumulate, False, alternate and t % 2 == 1)
    else:
        gemm(a, U, out, 1.0 if accumulate else 0.0, False, transpose)


@jit
def bptt_at(sync, q, t):
    """Thread q's BPTT has done steps t.. (for the thread doing their products, `finish_backward`)."""
    store_release(sync, q * SYNC_STRIDE + BPTT_AT, t)


PACKED_UT, BPTT_DONE = 1, 2   # the steps of a backward's barrier


@jit
def backward_start(U, UTp, pack_ut, dbs, db, sync, q):
    """The start of thread q's backward part: says it has started (`core.started`), and, where
    pack_ut, packs its share of the panels of U^T (H, G) into UTp, then waits for the others'
    (every BPTT product reads all of them; in parallel here, and not by the caller before the
    threads start: 17 µs at 16, 200, 64, 64). Returns the thread's own float64 sums of the bias
    gradient, zeroed: the start of its row of dbs (threads, a whole number of pages each, on
    pages of their own where the call's buffers come from the pool: each thread adds to its row
    every step), shaped as db."""
    started(sync, q)
    own = dbs[q, :db.size]
    for j in range(own.size):
        own[j] = 0.0
    if pack_ut:
        n, W = sync.size // SYNC_STRIDE, UTp.shape[2]
        for p in range(q, UTp.shape[0], n):
            pack(U[p * W:(p + 1) * W], UTp[p:p + 1], True)
        barrier(sync, q, PACKED_UT)
    return own.reshape(db.shape)


@jit
def finish_backward(x, hs, dxw, dhu, W, dx, dW, dU, db, dbs, scratch, sync, q, r0, r1, c0, c1, block):
    """The end of a thread's BPTT: the products over all steps, dx = dxw W^T, dW = x^T dxw and
    dU = h_{t-1}^T dhu, and thread 0 sums the threads' bias gradients (`backward_start`) into
    db, in thread order. x (T, B, I), hs (T+1, B, H) (h_{t-1} = hs[t]), dxw, dhu (T, B, G) the
    gradients of x_t W and h_{t-1} U (the same array for the LSTM and the RNN); scratch = (ap,
    bp, WTp, partials): ap, bp for `core.gemm_tn` (c0, c1 multiples of 32) or ap empty to use
    BLAS, WTp (threads, I/32, G, 32) for each thread's W^T packed and partials (threads, I + H,
    G), both empty unless each thread does its own rows.

    Where partials is not empty, each thread does the products of its own batch rows r0:r1, which
    its BPTT has just written: its rows of dx (on its own copy of W^T packed, so that no thread
    waits for another before it), then its partial [dW; dU] into partials[q], and after a
    barrier it sums columns c0:c1 of the partials into dW and dU in thread order (at 16, 200, 64,
    64 the backward 2.8 -> 2.4 ms against shares of all rows, which read half of dz from the
    other core; dx first, while the dz of the last steps BPTT did is in L2, then [dW; dU]: five
    alternating pairs 1.81-2.04 against 1.83-2.11 ms, each pair faster).
    Otherwise: a thread with block > 0 (and no BPTT rows) first sums all of dW and dU, over
    blocks of `block` steps as BPTT finishes them, from the last step down. Then, after a barrier
    (the products read every row), each thread does its run of the rows of dx and, unless a thread
    did them beside BPTT, columns c0:c1 of dW and dU."""
    T, B, I = x.shape
    G = dxw.shape[2]
    ap, bp, WTp, partials = scratch
    if partials.shape[0]:
        xq, hq, P = x[:, r0:r1], hs[:T, r0:r1], G // TILE_COLS
        pack(W, WTp[q], True)
        packed_gemm(dxw[:, r0:r1], WTp[q], dx[:, r0:r1], False)
        if dxw.ctypes.data == dhu.ctypes.data:       # [dW; dU] = [x h]^T dz in one product
            gemm_tn(xq, hq, dxw[:, r0:r1], partials[q], 0, P, ap, bp, False)
        else:
            gemm_tn(xq, xq[:, :, :0], dxw[:, r0:r1], partials[q, :I], 0, P, ap, bp, False)
            gemm_tn(hq, hq[:, :, :0], dhu[:, r0:r1], partials[q, I:], 0, P, ap, bp, False)
        _bptt_done(sync, q, dbs, db)
        _sum_partials(partials, dW, dU, c0, c1)
        finished(sync, q)
        return
    x2, h2, dx2 = x.reshape(T * B, I), hs[:T].reshape(T * B, hs.shape[2]), dx.reshape(T * B, I)
    dxw2, dhu2 = dxw.reshape(T * B, G), dhu.reshape(T * B, G)
    if block > 0:
        for t1 in range(T, 0, -block):
            t0 = max(0, t1 - block)
            _await_bptt(sync, t0)
            a, b = t0 * B, t1 * B
            _weight_grads(x2[a:b], h2[a:b], dxw2[a:b], dhu2[a:b], dW, dU, 0, G, ap, bp, t1 < T)
    _bptt_done(sync, q, dbs, db)
    k0, k1 = run_of(T * B, sync.size // SYNC_STRIDE, q, TILE_ROWS)
    gemm(dxw2[k0:k1], W, dx2[k0:k1], 0.0, False, True)
    if c1 > c0:
        _weight_grads(x2, h2, dxw2, dhu2, dW, dU, c0, c1, ap, bp, False)
    finished(sync, q)


@jit
def _bptt_done(sync, q, dbs, db):
    """Wait until every thread's BPTT is done (the products after it read every thread's rows),
    then, on thread 0, db = the sum over the threads of their rows of dbs (`backward_start`), in
    thread order."""
    barrier(sync, q, BPTT_DONE)
    if q > 0:
        return
    out = db.reshape(db.size)
    for j in range(db.size):
        total = dbs[0, j]
        for p in range(1, dbs.shape[0]):
            total += dbs[p, j]
        out[j] = total


@jit
def _sum_partials(partials, dW, dU, c0, c1):
    """Columns c0:c1 of dW (I, G) and dU (H, G) = the sum over threads of partials (threads,
    I + H, G), [dW; dU] of each thread's rows, added in thread order. The loops run over
    slices from 0, which LLVM vectorises (indexed from c0, they stayed scalar: 16.6 against 3.0
    µs on one core for half the columns at I = H = 64)."""
    wide_vectors()
    I, n = dW.shape[0], c1 - c0
    for i in range(partials.shape[1]):
        out = (dW[i] if i < I else dU[i - I])[c0:c1]
        first = partials[0, i, c0:c1]
        for j in range(n):
            out[j] = first[j]
        for p in range(1, partials.shape[0]):
            row = partials[p, i, c0:c1]
            for j in range(n):
                out[j] += row[j]


@jit
def _await_bptt(sync, t):
    """Wait until every thread's BPTT has done steps t.. (or a failure released sync)."""
    for p in range(sync.size // SYNC_STRIDE):
        spins = 0
        while t < load_acquire(sync, p * SYNC_STRIDE + BPTT_AT) < RELEASED:
            spins = spin_turn(spins)


@jit
def _weight_grads(x2, h2, dxw2, dhu2, dW, dU, c0, c1, ap, bp, accumulate):
    """Columns c0:c1 of dW (+)= x2^T dxw2 and dU (+)= h2^T dhu2 (added where accumulate)."""
    if ap.shape[0]:
        gemm_tn(x2, x2[:, :0], dxw2, dW, c0 // TILE_COLS, c1 // TILE_COLS, ap, bp, accumulate)
        gemm_tn(h2, h2[:, :0], dhu2, dU, c0 // TILE_COLS, c1 // TILE_COLS, ap, bp, accumulate)
    else:
        beta = 1.0 if accumulate else 0.0
        gemm(x2, dxw2[:, c0:c1], dW[:, c0:c1], beta, True, False)
        gemm(h2, dhu2[:, c0:c1], dU[:, c0:c1], beta, True, False)
