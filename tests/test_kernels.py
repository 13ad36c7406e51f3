"""The compiled kernels against the reference cell and torch.nn.LSTM, plus dispatch, threads, errors
and the on-disk cache."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import lstmkit
from lstmkit.cells import lstm as ref
from lstmkit.kernels import lstm as fast
from lstmkit.kernels import lstm_ops
from oracle import rel_error, rnn_weights_from_torch, run_torch_rnn, torch_dtype, torch_grads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["y", "h", "c", "dx", "dW", "dU", "db", "dh0", "dc0"]


def make_case(T, B, I, H, dtype, seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H).to(torch_dtype(dtype))
    W, U, b = rnn_weights_from_torch(module)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((2, B, H)) * 0.5).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh, dc = rng.standard_normal((2, B, H)).astype(dtype)
    return module, (x, W, U, b, h0, c0), (dy, dh, dc)


def run(ops, args, grads, lengths=None):
    x, W, U, b, h0, c0 = args
    dy, dh, dc = grads
    y, (hT, cT), cache = ops.lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    dx, dW, dU, db, dh0, dc0 = ops.lstm_backward(dy, dh, dc, cache)
    return dict(y=y, h=hT, c=cT, dx=dx, dW=dW, dU=dU, db=db, dh0=dh0, dc0=dc0)


def check(T, B, I, H, dtype, seed, lengths=None, against_torch=True):
    module, args, grads = make_case(T, B, I, H, dtype, seed)
    ours = run(fast, args, grads, lengths)
    theirs = run(ref, args, grads, lengths)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for name in NAMES:
        assert ours[name].dtype == dtype, name
        assert ours[name].shape == theirs[name].shape, name
        assert rel_error(ours[name], theirs[name]) < tol, (name, "reference", rel_error(ours[name], theirs[name]))
    if against_torch:
        dy, dh, dc = grads
        t = run_torch_rnn(module, args[0], args[4], args[5], lengths=lengths, dy=dy, dh=dh, dc=dc)
        t["dW"], t["dU"], t["db"] = torch_grads(module)
        for name in NAMES:
            assert rel_error(ours[name], t[name]) < tol, (name, "torch", rel_error(ours[name], t[name]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (5, 3, 4, 6), (7, 1, 3, 2), (4, 2, 8, 1), (12, 4, 5, 5),
                                     (3, 5, 40, 33), (20, 2, 16, 64),
                                     # batch >= 8 with H a multiple of 8 (32): the packed product
                                     (6, 9, 5, 32), (4, 16, 8, 24), (3, 8, 3, 8),
                                     (2, 8, 3, 256),    # ... shared among threads
                                     (2, 16, 3, 256), (3, 3, 2, 512),   # batch split among threads
                                     (40, 9, 5, 32),   # weight gradients over several k blocks
                                     (6, 1, 7, 128), (3, 5, 4, 32),   # one-row product, batch < 8
                                     (2, 3, 520, 32),    # x W by BLAS (I > 512)
                                     (2, 16, 3, 288)])   # dz_t U^T in blocks of k (4H > 1024)
def test_matches_reference_and_torch(T, B, I, H, dtype):
    check(T, B, I, H, dtype, seed=T * 100 + H)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_variable_lengths_match_packed_sequences(dtype):
    check(6, 4, 3, 5, dtype, seed=1, lengths=[6, 1, 3, 4])
    check(5, 10, 3, 32, dtype, seed=2, lengths=[5, 1, 3, 4, 2, 5, 5, 1, 2, 3])
    check(3, 17, 2, 256, dtype, seed=3, lengths=[1, 2, 3] * 5 + [3, 2])   # batch split


def test_zero_length_passes_state_through():
    # torch's packed sequences refuse length 0; the reference and the kernels agree on it.
    check(4, 3, 2, 3, np.float64, seed=5, lengths=[0, 4, 2], against_torch=False)
    _, (x, W, U, b, h0, c0), _ = make_case(4, 3, 2, 3, np.float64, seed=5)
    y, (hT, cT), _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=[0, 4, 2])
    assert np.all(y[:, 0] == 0) and np.all(y[2:, 2] == 0)
    np.testing.assert_array_equal(hT[0], h0[0])
    np.testing.assert_array_equal(cT[0], c0[0])


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 7), B=st.integers(1, 5), I=st.integers(1, 6), H=st.integers(1, 9),
       seed=st.integers(0, 10_000), variable=st.booleans(), single=st.booleans())
def test_property_matches_torch(T, B, I, H, seed, variable, single):
    lengths = None
    if variable:
        lengths = list(np.random.default_rng(seed).integers(1, T + 1, size=B))
    check(T, B, I, H, np.float32 if single else np.float64, seed, lengths=lengths)


def test_defaults_and_none_gradients_match_reference():
    _, (x, W, U, b, _, _), (dy, _, _) = make_case(5, 2, 3, 4, np.float64, seed=6)
    for ops in (fast, ref):
        y, (h, c), cache = ops.lstm_forward(x, W, U, b)
        out = [y, h, c, *ops.lstm_backward(dy, None, None, cache)]
        if ops is fast:
            ours = out
    for a, r in zip(ours, out):
        assert rel_error(a, r) < 1e-12


def test_backward_twice_gives_the_same_gradients():
    _, args, (dy, dh, dc) = make_case(4, 2, 3, 5, np.float32, seed=7)
    _, _, cache = fast.lstm_forward(*args)
    first = fast.lstm_backward(dy, dh, dc, cache)
    second = fast.lstm_backward(dy, dh, dc, cache)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_inputs():
    _, (x, W, U, b, h0, c0), _ = make_case(5, 3, 4, 6, np.float64, seed=8)
    xf = np.asfortranarray(x)
    Wt = np.ascontiguousarray(W.T).T            # same values, transposed memory
    y1, (h1, c1), _ = fast.lstm_forward(xf[:, ::1], Wt, U, b, h0, c0)
    y2, (h2, c2), _ = ref.lstm_forward(x, W, U, b, h0, c0)
    assert rel_error(y1, y2) < 1e-12 and rel_error(h1, h2) < 1e-12 and rel_error(c1, c2) < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B,I,H", [(1, 3, 5), (4, 7, 2), (1, 256, 256)])
def test_step_matches_reference_and_sequence(B, I, H, dtype):
    _, (x, W, U, b, h0, c0), _ = make_case(4, B, I, H, dtype, seed=9)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    y, (hT, cT), _ = fast.lstm_forward(x, W, U, b, h0, c0)
    h, c = h0, c0
    for t in range(4):
        hr, cr = ref.lstm_step(x[t], h, c, W, U, b)
        h, c = fast.lstm_step(x[t], h, c, W, U, b)
        assert h.dtype == dtype and c.dtype == dtype
        assert rel_error(h, hr) < tol and rel_error(c, cr) < tol
        assert rel_error(h, y[t]) < tol
    assert rel_error(c, cT) < tol


def test_saturated_gates_stay_finite_and_exact():
    # Pre-activations of +-200 saturate every gate; the kernels' exp clamps without overflow.
    _, (x, W, U, b, h0, c0), (dy, dh, dc) = make_case(3, 2, 2, 3, np.float64, seed=10)
    for dtype in (np.float64, np.float32):
        args = [a.astype(dtype) for a in (x * 100, W, U, b, h0, c0)]
        grads = [a.astype(dtype) for a in (dy, dh, dc)]
        ours, theirs = run(fast, args, grads), run(ref, args, grads)
        for name in NAMES:
            assert np.all(np.isfinite(ours[name])), name
            assert rel_error(ours[name], theirs[name]) < (1e-10 if dtype == np.float64 else 1e-5), name


def test_nan_input_propagates():
    _, (x, W, U, b, h0, c0), _ = make_case(3, 1, 2, 3, np.float32, seed=11)
    x[1, 0, 0] = np.nan
    y, _, _ = fast.lstm_forward(x, W, U, b, h0, c0)
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1:]))


def test_dispatch():
    assert lstm_ops() is fast and lstm_ops("fast") is fast
    assert lstm_ops("reference") is ref
    for ops in (fast, ref):
        assert all(callable(getattr(ops, f)) for f in ("lstm_forward", "lstm_backward", "lstm_step"))
    with pytest.raises(ValueError, match="impl"):
        lstm_ops("cuda")


@pytest.mark.parametrize("bad", [
    dict(x=np.zeros((3, 2), np.float32)),                       # 2-D input
    dict(x=np.zeros((3, 2, 4), np.int64)),                      # integer input
    dict(x=np.zeros((0, 2, 4), np.float32)),                    # no time steps
    dict(W=np.zeros((5, 12), np.float32)),                      # W rows != input size
    dict(U=np.zeros((3, 10), np.float32)),                      # U not (H, 4H)
    dict(b=np.zeros(11, np.float32)),                           # b not (4H,)
    dict(h0=np.zeros((3, 3), np.float32)),                      # h0 batch wrong
    dict(lengths=[1, 5]),                                       # longer than T
    dict(lengths=[1]),                                          # one per sequence
    dict(lengths=[1.5, 2.0]),                                   # not integers
])
def test_errors_say_what_is_wrong(bad):
    args = dict(x=np.zeros((3, 2, 4), np.float32), W=np.zeros((4, 12), np.float32),
                U=np.zeros((3, 12), np.float32), b=np.zeros(12, np.float32), h0=None, c0=None,
                lengths=None)
    args.update(bad)
    with pytest.raises(ValueError):
        fast.lstm_forward(**args)


def test_step_and_backward_errors():
    W, U, b = np.zeros((4, 12)), np.zeros((3, 12)), np.zeros(12)
    with pytest.raises(ValueError, match="h must have shape"):
        fast.lstm_step(np.zeros((2, 4)), np.zeros((1, 3)), np.zeros((2, 3)), W, U, b)
    with pytest.raises(ValueError, match="batch, features"):
        fast.lstm_step(np.zeros(4), np.zeros((1, 3)), np.zeros((1, 3)), W, U, b)
    _, _, cache = fast.lstm_forward(np.zeros((2, 1, 4)), W, U, b)
    with pytest.raises(ValueError, match="dy must have shape"):
        fast.lstm_backward(np.zeros((2, 1, 4)), None, None, cache)


def test_set_num_threads():
    from threadpoolctl import threadpool_info
    with pytest.raises(ValueError):
        lstmkit.set_num_threads(0)
    with pytest.raises(ValueError):
        lstmkit.set_num_threads("2")
    try:
        assert lstmkit.set_num_threads(1) == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        _, args, grads = make_case(3, 2, 3, 4, np.float32, seed=12)
        run(fast, args, grads)   # the kernels keep within the bound
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        lstmkit.set_num_threads(os.cpu_count() or 1)


def _python(code, timeout=600, **env):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=REPO, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_compiles_nothing():
    out = _python("""
        import sys, lstmkit, lstmkit.kernels
        print('numba' in sys.modules, 'lstmkit.kernels.lstm' in sys.modules)
    """)
    assert out.split() == ["False", "False"]


def test_environment_variable_bounds_all_blas_pools():
    out = _python("""
        import lstmkit.kernels.lstm
        from threadpoolctl import threadpool_info
        print(sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}))
    """, LSTMKIT_NUM_THREADS="1")
    assert out.strip() == "[1]"


def test_second_process_loads_compiled_code_from_disk():
    code = """
        import time
        import numpy as np
        from lstmkit.kernels import lstm
        x = np.ones((3, 2, 4), np.float32)
        W, U, b = np.ones((4, 8), np.float32), np.ones((2, 8), np.float32), np.ones(8, np.float32)
        t = time.perf_counter()
        y, _, cache = lstm.lstm_forward(x, W, U, b)
        lstm.lstm_backward(y, None, None, cache)
        lstm.lstm_step(x[0], y[0], y[0], W, U, b)
        x, U, b = np.ones((1, 8, 4), np.float32), np.ones((256, 1024), np.float32), np.ones(1024, np.float32)
        y, _, cache = lstm.lstm_forward(x, np.ones((4, 1024), np.float32), U, b)   # packed, parallel
        lstm.lstm_backward(y, None, None, cache)
        print(time.perf_counter() - t)
    """
    _python(code)                        # compiles if this tree has no cache yet
    seconds = float(_python(code))
    assert seconds < 1.0, f"first calls took {seconds:.2f} s with a warm cache"


def test_forked_child_runs_after_parent_used_threads():
    # A child forked after the kernel threads started must make its own (the parent's are gone).
    out = _python("""
        import os
        import numpy as np
        from lstmkit.kernels import lstm
        x, W = np.ones((2, 8, 4), np.float32), np.ones((4, 1024), np.float32)
        U, b = np.full((256, 1024), 0.01, np.float32), np.zeros(1024, np.float32)
        y, _, _ = lstm.lstm_forward(x, W, U, b)
        pid = os.fork()
        if pid == 0:
            y2, _, _ = lstm.lstm_forward(x, W, U, b)
            os._exit(0 if np.array_equal(y, y2) else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """, LSTMKIT_NUM_THREADS="2")
    assert out.strip() == "0"


@pytest.mark.parametrize("K,M,N,p0,p1", [(1, 1, 32, 0, 1), (7, 5, 64, 0, 2), (300, 13, 96, 1, 3),
                                         (600, 64, 128, 0, 4), (257, 9, 64, 0, 1), (0, 5, 64, 0, 2),
                                         (300, 530, 64, 0, 2)])
def test_weight_gradient_product(K, M, N, p0, p1):
    # gemm_tn: c[:, panels p0..p1] (+)= a^T b in blocks of 256 values of k, M not a multiple of 8
    # (M = 530: 67 tiles of rows, run 64 at a time); the other panels of c are left alone, a may
    # be a strided view; K = 0 gives zeros (or adds nothing).
    from lstmkit.kernels import buffers
    from lstmkit.kernels.core import gemm_tn, gemm_tn_scratch
    rng = np.random.default_rng(K + M)
    a = rng.standard_normal((K, M + 3)).astype(np.float32)[:, 1:M + 1]
    b = rng.standard_normal((K, N)).astype(np.float32)
    inside = slice(32 * p0, 32 * p1)
    outside = np.ones(N, bool)
    outside[inside] = False
    for accumulate in (False, True):
        c = np.full((M, N), 7.0, np.float32)
        gemm_tn(a, a[:, :0], b, c, p0, p1, *buffers.empty_group(*gemm_tn_scratch(M, p1 - p0, np.float32)), accumulate)
        want = a.astype(np.float64).T @ b.astype(np.float64) + (7.0 if accumulate else 0.0)
        assert rel_error(c[:, inside], want[:, inside]) < 1e-5
        assert np.all(c[:, outside] == 7.0)


def test_weight_gradient_product_over_steps():
    # gemm_tn on a thread's batch rows of every step: (S, R, M) and (S, R, N) strided views, K =
    # S R = 300 in blocks of 256 values of k, one ending inside a step.
    from lstmkit.kernels import buffers
    from lstmkit.kernels.core import gemm_tn, gemm_tn_scratch
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 16, 40)).astype(np.float32)
    dz = rng.standard_normal((30, 16, 96)).astype(np.float32)
    a, b = x[:, 3:13], dz[:, 3:13]
    c = np.full((40, 96), 7.0, np.float32)
    gemm_tn(a, a[:, :, :0], b, c, 0, 3, *buffers.empty_group(*gemm_tn_scratch(40, 3, np.float32)), False)
    want = np.einsum("srm,srn->mn", a.astype(np.float64), b.astype(np.float64))
    assert rel_error(c, want) < 1e-5
    # [a a2]^T b, panels 1, 2 added: a and a2 share a tile (copied value by value), or each has
    # whole tiles (copied 8 values at a time)
    for a, a2 in [(x[:, 3:13, :37], x[:, 3:13, 5:16]), (x[:, 3:13, :24], x[:, 3:13, 16:40])]:
        c = np.full((48, 96), 7.0, np.float32)
        gemm_tn(a, a2, b, c, 1, 3, *buffers.empty_group(*gemm_tn_scratch(48, 2, np.float32)), True)
        both = np.concatenate([a, a2], axis=2).astype(np.float64)
        want = np.einsum("srm,srn->mn", both, b.astype(np.float64)) + 7.0
        assert rel_error(c[:, 32:], want[:, 32:]) < 1e-5 and np.all(c[:, :32] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("M", [1, 3])
def test_blas_product(dtype, trans_a, trans_b, M):
    # core.gemm: c = op(a) op(b) + beta c by BLAS, one row by gemv (a row of a, or a column of a
    # stored contiguously), several by gemm; the column of a strided view falls back to gemm.
    from lstmkit.kernels.core import gemm
    rng = np.random.default_rng(M + 2 * trans_a + trans_b)
    K, N = 37, 300
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    start = rng.standard_normal((M, N)).astype(dtype)
    op = lambda m, t: m.T if t else m
    for a_ in (a, np.repeat(a, 2, axis=0)[::2] if trans_a else a):       # (a column with a stride of 2)
        for beta in (0.0, 1.0, -0.5):
            c = start.copy()
            gemm(a_, b, c, beta, trans_a, trans_b)
            want = op(a_.astype(np.float64), trans_a) @ op(b.astype(np.float64), trans_b) + beta * start
            assert rel_error(c, want) < (1e-12 if dtype == np.float64 else 1e-5), beta


def test_arbitrary_strides_on_length_one_axes():
    # NumPy may give any stride to an axis of length 1 and still call the array contiguous.
    from numpy.lib.stride_tricks import as_strided
    _, (x, W, U, b, h0, c0), (dy, dh, dc) = make_case(1, 1, 3, 4, np.float64, seed=13)
    odd = lambda a: as_strided(a, strides=tuple(12345 * a.itemsize if n == 1 else s
                                                for n, s in zip(a.shape, a.strides)))
    args, grads = [odd(a) for a in (x, W, U, b, h0, c0)], [odd(a) for a in (dy, dh, dc)]
    ours, theirs = run(fast, args, grads), run(ref, [a.copy() for a in args], [g.copy() for g in grads])
    for name in NAMES:
        assert rel_error(ours[name], theirs[name]) < 1e-12, name
    h, c = fast.lstm_step(odd(x[0]), odd(h0), odd(c0), W, U, b)
    assert rel_error(h, ref.lstm_step(x[0], h0, c0, W, U, b)[0]) < 1e-12


@pytest.mark.parametrize("M,K,N,width,accumulate", [(300, 512, 64, 32, False), (300, 512, 64, 32, True),
                                                    (13, 40, 96, 32, True), (3, 40, 256, 128, False),
                                                    (1, 7, 128, 128, True), (9, 0, 32, 32, False),
                                                    (20, 1100, 64, 32, False), (3, 1100, 128, 128, True)])
def test_packed_product(M, K, N, width, accumulate):
    # packed_gemm: c (+)= a @ U on U packed in panels of `width` columns; 8-row tiles over blocks
    # of rows (300 x 512: three blocks) and of k (K = 1100: three), one-row tiles for a few rows;
    # a strided view of a; k running up and (descending) down.
    from lstmkit.kernels.core import pack, packed_gemm
    rng = np.random.default_rng(M + K)
    a = rng.standard_normal((M, K + 5)).astype(np.float32)[:, 2:K + 2]
    U = rng.standard_normal((K, N)).astype(np.float32)
    packed = np.empty((N // width, K, width), np.float32)
    pack(U, packed, False)
    start = rng.standard_normal((M, N)).astype(np.float32)
    want = a.astype(np.float64) @ U + (start if accumulate else 0)
    for descending in (False, True):
        c = start.copy()
        packed_gemm(a, packed, c, accumulate, False, descending)
        assert rel_error(c, want) < 1e-5 if K else np.array_equal(c, want)
    UT = np.ascontiguousarray(U.T)               # the same panels from U^T
    packed_t = np.empty_like(packed)
    pack(UT, packed_t, True)
    assert np.array_equal(packed_t, packed)


@pytest.mark.parametrize("H,u0,u1,width", [(128, 0, 64, 128), (128, 64, 128, 32), (192, 96, 192, 128),
                                            (192, 64, 128, 32), (64, 0, 64, 128)])
def test_packing_the_columns_of_some_units(H, u0, u1, width):
    # pack_unit_columns lays out the gates' columns of units u0:u1 (i, then f, g, o) in panels,
    # a panel of 128 spanning two gates where a thread has 96 units or 32 units a gate.
    from lstmkit.kernels.common import pack_unit_columns
    K = 40
    M = np.random.default_rng(H + u0).standard_normal((K, 4 * H)).astype(np.float32)
    columns = M[:, [g * H + u for g in range(4) for u in range(u0, u1)]]
    packed = np.full((4 * (u1 - u0) // width, K, width), np.nan, np.float32)
    pack_unit_columns(M, packed, H, u0, u1)
    assert np.array_equal(np.concatenate(list(packed), axis=1), columns)


@pytest.mark.parametrize("K1,K2,descending", [(128, 64, False), (128, 64, True), (64, 100, False), (256, 7, True),
                                               (0, 40, False)])
def test_row_product_and_x_w_tile_in_one_loop(K1, K2, descending):
    # row_and_tile: c += a @ P (one row, a 128-column panel, k up or down) and an 8 x 32 tile
    # z = x @ Q of 5 rows, two values of k of the first to one of the second; the tile's k split in
    # two calls (the second continuing from z) gives the bits of one call; c is untouched at K1 = 0.
    from numba import njit
    from lstmkit.kernels.core import row_and_tile
    rng = np.random.default_rng(K1 + K2)
    a, P = rng.standard_normal(K1).astype(np.float32), rng.standard_normal((K1, 128)).astype(np.float32)
    x, Q = rng.standard_normal((5, K2)).astype(np.float32), rng.standard_normal((K2, 32)).astype(np.float32)
    c0 = rng.standard_normal(128).astype(np.float32)

    @njit
    def both(a, P, c, x, Q, z, k0, k1, acc):
        top, dk = (P.shape[0] - 1, -1) if descending else (0, 1)
        row_and_tile(a, top, dk, P, top * 128, dk * 128, P.shape[0], c, 0, x, k0, x.shape[1], x.shape[0], Q,
                     k0 * 32, k1 - k0, z, 0, z.shape[1], acc)

    c, z = c0.copy(), np.full((8, 40), 7.0, np.float32)
    both(a, P, c, x, Q, z, 0, K2, False)
    assert rel_error(c, c0 + a.astype(np.float64) @ P) < 1e-5 and (K1 or np.array_equal(c, c0))
    assert rel_error(z[:5, :32], x.astype(np.float64) @ Q) < 1e-5 and np.all(z[5:] == 7) and np.all(z[:, 32:] == 7)
    split = np.full_like(z, 7.0)
    both(a, P[:0], c, x, Q, split, 0, K2 // 2, False)
    both(a, P[:0], c, x, Q, split, K2 // 2, K2, True)
    np.testing.assert_array_equal(split, z)


@pytest.mark.parametrize("S,B,r0,r1,K,width", [(5, 20, 3, 17, 24, 32), (4, 6, 2, 5, 24, 128), (1, 9, 0, 9, 24, 32),
                                                (7, 40, 3, 37, 1100, 32),    # 3 blocks of steps x 3 of k
                                                (2, 300, 0, 300, 512, 32),   # 3 blocks of rows in each step
                                                (3, 6, 1, 4, 1100, 128)])    # one-row tiles, 3 blocks of k
def test_packed_product_over_steps(S, B, r0, r1, K, width):
    # packed_gemm on a (S, rows, K) strided view (a thread's batch rows of every step) writes the
    # same as one product per step, and nothing outside those rows.
    from lstmkit.kernels.core import pack, packed_gemm
    rng = np.random.default_rng(S + B)
    N = 2 * width
    x = rng.standard_normal((S, B, K)).astype(np.float32)
    U = rng.standard_normal((K, N)).astype(np.float32)
    packed = np.empty((N // width, K, width), np.float32)
    pack(U, packed, False)
    out = np.full((S, B, N), 7.0, np.float32)
    packed_gemm(x[:, r0:r1], packed, out[:, r0:r1], False)
    want = np.full((S, B, N), 7.0)
    want[:, r0:r1] = x[:, r0:r1].astype(np.float64) @ U
    assert rel_error(out, want) < 1e-5 and np.all(out[:, :r0] == 7.0) and np.all(out[:, r1:] == 7.0)


@pytest.mark.parametrize("shape,K,accumulate", [((300,), 512, False), ((6, 24), 100, False),   # streamed
                                               ((300,), 512, True), ((300,), 1100, False)])  # 3 blocks of k
def test_packed_product_streamed(shape, K, accumulate):
    # packed_gemm(..., stream=True) writes c = a @ U by non-temporal stores where c's tiles are
    # 64-byte aligned, writing nothing else; otherwise (adding, several blocks of k, c not aligned)
    # it writes as without stream. Either way the numbers are those of the plain product, bit
    # for bit.
    from lstmkit.kernels import buffers
    from lstmkit.kernels.core import pack, packed_gemm
    rng = np.random.default_rng(K)
    N = 96
    a = rng.standard_normal((*shape, K)).astype(np.float32)
    U = rng.standard_normal((K, N)).astype(np.float32)
    packed = np.empty((N // 32, K, 32), np.float32)
    pack(U, packed, False)
    start = rng.standard_normal((*shape, N)).astype(np.float32)
    plain = start.copy()
    packed_gemm(a, packed, plain, accumulate)
    want = a.astype(np.float64) @ U + (start if accumulate else 0)
    assert rel_error(plain, want) < 1e-5
    aligned = buffers.empty((*shape, N + 16), np.float32)             # 128-byte aligned, rows of 448 bytes
    misaligned = buffers.empty((np.prod(shape) * N + 1,), np.float32)[1:].reshape(*shape, N)
    for out in (aligned[..., 16:], misaligned):
        out[...] = start
        if out is not misaligned:
            aligned[..., :16] = 7.0
        packed_gemm(a, packed, out, accumulate, True)
        np.testing.assert_array_equal(out, plain)
    assert np.all(aligned[..., :16] == 7.0)


def test_reciprocal_is_correctly_rounded():
    # vrecip divides (LLVM's estimate with one Newton step left 2 ulps in loops' narrow vectors
    # and single values): correctly rounded everywhere, in any part of a loop.
    from numba import njit
    from lstmkit.kernels.core import FASTMATH, vrecip, wide_vectors

    @njit(fastmath=FASTMATH, error_model="numpy")
    def recip(x, out):
        wide_vectors()                            # (which forbids the reciprocal estimate)
        for j in range(x.shape[0]):
            out[j] = vrecip(x[j])

    x = np.concatenate([np.geomspace(1e-30, 1e30, 5000), -np.geomspace(1e-3, 1e3, 999), [np.nan]]).astype(np.float32)
    out = np.empty_like(x)
    recip(x, out)
    exact = (1.0 / x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(out, exact)                 # (NaN where x is NaN)


@pytest.fixture
def kernel_threads():
    """Run the test under several thread bounds, restoring the machine's after."""
    yield lstmkit.set_num_threads
    lstmkit.set_num_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("T,B,I,H,dtype", [(3, 17, 5, 256, np.float32),    # T B = 51 rows of x W split unevenly
                                           (4, 32, 8, 64, np.float32),     # 4 row runs of 8 at n = 3: 3 runs
                                           (2, 16, 3, 256, np.float64)])
def test_every_thread_count_gives_the_same_numbers(kernel_threads, n, T, B, I, H, dtype):
    kernel_threads(n)
    check(T, B, I, H, dtype, seed=n + H, lengths=[T] * (B - 2) + [1, 0], against_torch=False)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("T,B,I,H,dtype,lengths", [
    (1, 3, 4, 5, np.float64, None),                      # one step: no ring
    (2, 3, 4, 5, np.float64, [2, 1, 0]),                 # the final state in ring row 0
    (7, 16, 64, 64, np.float32, [7] * 13 + [6, 1, 0]),   # 16 rows split between threads
    (60, 1, 128, 64, np.float32, None),                  # batch 1: x W projected beside the recurrence
    (33, 5, 9, 32, np.float32, [33, 20, 1, 0, 32])])
def test_inference_forward_keeps_no_cache_and_gives_the_same_numbers(kernel_threads, n, T, B, I, H, dtype, lengths):
    # keep_cache=False (a layer that is not training) keeps c of two steps only, in a ring, and
    # reads h_{t-1} back from y: the outputs and final states (h at each row's length) are those
    # of a training forward, bit for bit, and the reference's within the tolerance.
    kernel_threads(n)
    _, (x, W, U, b, h0, c0), _ = make_case(T, B, I, H, dtype, seed=T + B)
    train_y, train_states, cache = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    y, states, none = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths, keep_cache=False)
    ref_y, ref_states, ref_none = ref.lstm_forward(x, W, U, b, h0, c0, lengths=lengths, keep_cache=False)
    assert cache is not None and none is None and ref_none is None
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for ours, train, reference in zip((y, *states), (train_y, *train_states), (ref_y, *ref_states)):
        np.testing.assert_array_equal(ours, train)
        assert rel_error(ours, reference) < tol


@pytest.mark.parametrize("T,B,I,H,lengths", [
    (40, 16, 64, 64, [40] * 13 + [39, 2, 1]),    # 8 rows a thread: two tiles, four unit groups
    (25, 24, 24, 48, [25] * 22 + [7, 1]),         # 12 rows a thread, three unit groups, I != H
    (9, 40, 16, 32, None)])                       # 20 rows a thread, two unit groups
def test_small_layers_run_their_steps_in_registers(kernel_threads, T, B, I, H, lengths):
    # Where W and U are small (float32, whole 4-row tiles a thread, H a multiple of 16), each step
    # runs in `gate_tile.lstm_tile`, x W included: the same numbers as the reference and PyTorch,
    # forward and backward, with lengths; an inference forward gives the training forward's bits.
    # A thread's rows not in whole tiles (9 each) fall back to the per-step products.
    from lstmkit.kernels import common
    kernel_threads(2)
    layout = lambda B: common._forward_layout(T, B, I, H, 4 * H, np.dtype(np.float32), 2, True, True)[2]
    assert all(fill == common.GATE_TILE for _, fill in layout(B))
    assert all(fill != common.GATE_TILE for _, fill in layout(18))
    check(T, B, I, H, np.float32, seed=B, lengths=lengths)
    _, (x, W, U, b, h0, c0), _ = make_case(T, B, I, H, np.float32, seed=B)
    y, states, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    y_inf, states_inf, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths, keep_cache=False)
    for ours, train in zip((y_inf, *states_inf), (y, *states)):
        np.testing.assert_array_equal(ours, train)
    x[1, 2, 0] = np.nan                                 # a NaN stays in its row, though rows share a tile
    for keep_cache in (True, False):
        y, _, _ = fast.lstm_forward(x, W, U, b, h0, c0, keep_cache=keep_cache)
        assert np.all(np.isnan(y[1:, 2])) and np.all(np.isfinite(np.delete(y, 2, axis=1))) and np.all(np.isfinite(y[0]))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("T,B,I,H,dtype", [(120, 3, 40, 64, np.float32),   # packed x W, gemm_tn
                                           (120, 3, 30, 20, np.float32),   # 4H = 80: BLAS products
                                           (60, 2, 16, 32, np.float64)])   # BLAS products
def test_small_batches_run_the_products_beside_the_recurrence(kernel_threads, n, T, B, I, H, dtype):
    # A batch too small to split runs the recurrence on one thread while a second projects x W
    # ahead of it (W packed) and sums dW and dU over the steps BPTT has finished, in an order that
    # does not depend on timing: the same numbers every time.
    from lstmkit.kernels import common, core
    kernel_threads(n)
    assert common.backward_plan(T, B, I, H, 4 * H, 1, dtype)[2][1] > 0
    packed_w = dtype == np.float32 and H % 8 == 0
    assert (len(common.forward_plan(T, B, I, 4 * H, 1, packed_w)[1]) == 2) == packed_w   # 1 batch run: 2 threads
    sync = common._forward_layout(T, B, I, H, 4 * H, np.dtype(dtype), n, True)[3]
    workers = sync[core.SYNC_STRIDE + core.RETURN_AT_ONCE::core.SYNC_STRIDE].tolist()
    assert workers == ([1] if H == 64 else [0] * len(workers))   # the projecting thread returns at once
    lengths = [T - 7, 1, 2][:B]
    check(T, B, I, H, dtype, seed=n + H, lengths=lengths)
    _, args, grads = make_case(T, B, I, H, dtype, seed=n)
    first = run(fast, args, grads, lengths)
    for _ in range(20):             # a timing-dependent sum differed in 5-11% of pairs of runs
        again = run(fast, args, grads, lengths)
        for name in NAMES:
            assert np.array_equal(first[name], again[name]), name


@pytest.mark.parametrize("n,T,B,I,H,lengths", [
    (2, 50, 1, 128, 128, None),                 # 64 units a thread: half of each 128-column panel of U;
                                                # batch 1: x W in halves of tiles beside the products
    (2, 5, 1, 7, 128, [3]),                     # ... fewer than 8 steps (x W's first block only), odd I
    (2, 30, 1, 1100, 256, None),                # ... I > 1024, rows of x W beyond the last step
    (3, 21, 1, 33, 192, [21]),                  # ... on three threads
    (2, 23, 5, 9, 128, [23, 1, 0, 22, 23]),     # rows past their length (one of none: not PyTorch)
    (2, 7, 3, 600, 192, [7, 6, 2]),             # 96 units a thread: panels span two gates; I > 512
    (3, 9, 2, 16, 192, [9, 4])])                # 64 units a thread on three
def test_small_batches_split_their_units_among_the_threads(kernel_threads, monkeypatch, n, T, B, I, H, lengths):
    # A batch under 8 rows with a large U splits its units among the threads, each reading only
    # its units' part of U every step, with a barrier a step: the same numbers as the reference
    # and PyTorch, forward and backward, with lengths; inference gives the training forward's bits,
    # and every run the same. Not with more threads than cores (here made n, then n - 1).
    from lstmkit.kernels import common, threads
    kernel_threads(n)
    layout = lambda B, H: common._forward_layout(T, B, I, H, 4 * H, np.dtype(np.float32), n, True, True, True)[2]
    monkeypatch.setattr(threads, "cores", lambda: n - 1)
    common._forward_layout.cache_clear()
    assert all(fill != common.BY_UNITS for _, fill in layout(B, H))
    monkeypatch.setattr(threads, "cores", lambda: n)
    common._forward_layout.cache_clear()
    assert all(fill == common.BY_UNITS for _, fill in layout(B, H))
    assert all(fill != common.BY_UNITS for _, fill in layout(B, 64) + layout(16, H))   # small U; split batch
    check(T, B, I, H, np.float32, seed=n + B, lengths=lengths, against_torch=lengths is None or min(lengths) > 0)
    _, args, grads = make_case(T, B, I, H, np.float32, seed=n + B)
    x, W, U, b, h0, c0 = args
    y, states, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    y_inf, states_inf, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths, keep_cache=False)
    for ours, train in zip((y_inf, *states_inf), (y, *states)):
        np.testing.assert_array_equal(ours, train)
    first = run(fast, args, grads, lengths)
    for _ in range(5):
        again = run(fast, args, grads, lengths)
        for name in NAMES:
            assert np.array_equal(first[name], again[name]), name
    monkeypatch.undo()
    common._forward_layout.cache_clear()              # (layouts worked out with the pretended cores)


@pytest.mark.parametrize("n", [2, 3])
def test_split_batches_do_the_products_of_their_own_rows(kernel_threads, n):
    # Threads on the batch with small weight gradients do the products of their own rows (dx, a
    # partial dW and dU; 15 or 10 rows: blocks of 256 values of k end inside a step), then sum the
    # partials in thread order: the same numbers every time.
    from lstmkit.kernels import common
    kernel_threads(n)
    T, B, I, H = 40, 30, 32, 64
    assert common.batch_parts(B, H, 4 * H, np.float32) == n
    assert common.backward_plan(T, B, I, H, 4 * H, n, np.float32)[3]
    lengths = [T] * (B - 3) + [T - 5, 1, 2]
    check(T, B, I, H, np.float32, seed=n, lengths=lengths)
    _, args, grads = make_case(T, B, I, H, np.float32, seed=n)
    first = run(fast, args, grads, lengths)
    for _ in range(5):
        again = run(fast, args, grads, lengths)
        for name in NAMES:
            assert np.array_equal(first[name], again[name]), name
    B = 8 * n + 1                                   # uneven runs (8, 9 or 8, 8, 9), a length 0
    assert common.batch_parts(B, H, 4 * H, np.float32) == n
    check(7, B, I, H, np.float32, seed=n, lengths=[7] * (B - 2) + [3, 0], against_torch=False)


def test_large_projections_are_streamed(kernel_threads):
    # From STREAM_MIN_BYTES of x W per thread, the threads that project their own rows write it by
    # non-temporal stores: the same numbers as the reference and PyTorch, forward and backward,
    # and as an inference forward.
    from lstmkit.kernels import common
    kernel_threads(2)
    T, B, I, H = 128, 16, 32, 256                      # 4 MB of x W per thread
    _, _, jobs, _, _ = common._forward_layout(T, B, I, H, 4 * H, np.dtype(np.float32), 2, True)
    assert all(fill == common.PROJECT_OWN | common.STREAM_X_W for _, fill in jobs)
    _, _, jobs, _, _ = common._forward_layout(T // 2, B, I, H, 4 * H, np.dtype(np.float32), 2, True)
    assert all(fill == common.PROJECT_OWN for _, fill in jobs)
    lengths = [T] * (B - 3) + [T - 9, 2, 1]             # (PyTorch takes no length 0)
    check(T, B, I, H, np.float32, seed=5, lengths=lengths)
    _, (x, W, U, b, h0, c0), _ = make_case(T, B, I, H, np.float32, seed=5)
    y, states, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths)
    y_inf, states_inf, _ = fast.lstm_forward(x, W, U, b, h0, c0, lengths=lengths, keep_cache=False)
    for ours, train in zip((y_inf, *states_inf), (y, *states)):
        np.testing.assert_array_equal(ours, train)


def test_concurrent_callers_and_interleaved_caches(kernel_threads):
    # Two Python threads call the kernels at once with three kernel threads (the pool serves both),
    # and one thread keeps two forward caches alive before running both backward passes.
    from concurrent.futures import ThreadPoolExecutor
    kernel_threads(3)
    cases = [make_case(3, 24, 5, 128, np.float32, seed=s) for s in range(2)]
    want = [run(ref, args, grads) for _, args, grads in cases]

    def interleaved(_):
        fwd = [fast.lstm_forward(*args) for _, args, _ in cases]
        out = []
        for (y, (h, c), cache), (_, _, (dy, dh, dc)) in zip(fwd, cases):
            dx, dW, dU, db, dh0, dc0 = fast.lstm_backward(dy, dh, dc, cache)
            out.append(dict(y=y, h=h, c=c, dx=dx, dW=dW, dU=dU, db=db, dh0=dh0, dc0=dc0))
        return out

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(interleaved, range(4)))
    for got in results:
        for ours, theirs in zip(got, want):
            for name in NAMES:
                assert rel_error(ours[name], theirs[name]) < 1e-5, name


def test_idle_workers_sleep_and_wake_for_the_next_call():
    # The crew's threads spin for about a millisecond after a job, then sleep; the next call must
    # wake them (the two-sided flag in core.await_job / core.post) and get the same numbers. In a
    # process of its own: a lost wake-up would hang it (the timeout fails the test).
    out = _python("""
        import time
        import numpy as np
        import lstmkit
        from lstmkit.kernels import core, lstm, threads
        lstmkit.set_num_threads(2)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 16, 8)).astype(np.float32)
        W, U = (rng.standard_normal((k, 512)).astype(np.float32) * 0.1 for k in (8, 128))
        b = np.zeros(512, np.float32)
        first = lstm.lstm_forward(x, W, U, b)[0]        # 2 threads: the crew ran a part
        asleep = threads._crew.mail[core.ASLEEP::core.SYNC_STRIDE]
        deadline = time.monotonic() + 10
        while not asleep.all() and time.monotonic() < deadline:
            time.sleep(0.01)
        slept = bool(asleep.all())
        again = lstm.lstm_forward(x, W, U, b)[0]
        mail = threads._crew.mail
        print(slept, np.array_equal(first, again), mail[core.DONE] == mail[core.POSTED] == 2)
    """, timeout=120)
    assert out.split() == ["True", "True", "True"]


def test_the_crew_holds_no_array_after_a_call():
    # The pool frees a block once nothing refers to it: a worker must drop its job's arguments.
    out = _python("""
        import gc
        import numpy as np
        import lstmkit
        from lstmkit.kernels import buffers, lstm
        lstmkit.set_num_threads(2)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((120, 3, 40)).astype(np.float32)   # a small batch: both threads
        W, U = (rng.standard_normal((k, 256)).astype(np.float32) * 0.1 for k in (40, 64))
        y, _, cache = lstm.lstm_forward(x, W, U, np.zeros(256, np.float32))
        grads = lstm.lstm_backward(np.ones_like(y), None, None, cache)
        del y, cache, grads
        gc.collect()
        print(buffers.pooled_bytes()[0])
    """, timeout=120)
    assert out.split() == ["0"]


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_thread_releases_the_others(failing):
    # A job that raises (on the caller's thread, 0, or a worker, 1) must not leave the other
    # waiting forever, at a barrier or for BPTT's progress (the products beside a small batch's
    # BPTT); the crew serves the next call.
    out = _python(f"""
        import numpy as np
        from lstmkit.kernels import common, threads
        from lstmkit.kernels.core import SYNC_STRIDE, barrier, barrier_array, finished, started
        threads.set_num_threads(2)
        def job(q, sync, fail):
            started(sync, q)
            if q == fail:
                raise ArithmeticError(f"job {{q}} failed")
            barrier(sync, q, 1)
            common._await_bptt(sync, 0)
            finished(sync, q)
        for fail in ({failing}, -1):
            sync = barrier_array(2)
            sync[common.BPTT_AT::SYNC_STRIDE] = 5 if fail >= 0 else 0   # BPTT never gets there
            try:
                threads.run_parallel(job, [(0, sync, fail), (1, sync, fail)], sync)
                print("no failure")
            except ArithmeticError as err:
                print(err)
    """, timeout=120)
    assert out.split("\n")[:2] == [f"job {failing} failed", "no failure"]
