"""Building blocks of the compiled kernels: a BLAS gemm callable from Numba, a register-tiled
product on packed weights, exp and 1/x written so that LLVM vectorises them, and a barrier.

Why our own exp: without Intel's SVML patch in llvmlite (the pip wheel has none, so Numba reports
"SVML Operational: False" even with intel-cmplr-lib-rt installed), `math.exp` and `math.tanh` in a
loop stay scalar libm calls, about 17 ns per element, 60x slower than NumPy's vectorised tanh. The
exp below is Cody-Waite range reduction plus a Taylor polynomial, pure arithmetic, so the loops
that use it compile to AVX-512 code: float32 error about 1 ulp, float64 about 2 ulp.

Why our own gemm call: `np.dot(a, b, out)` in Numba cannot accumulate (beta = 1) or take
transposed strided views. `gemm` calls the same BLAS (SciPy's OpenBLAS, through Numba's
`numba_xxgemm` helper, resolved by name so the on-disk cache stays valid) with any op and beta.
The kernels use only this BLAS, on one thread each; their threads are their own (threads.py).

Why our own products: the recurrent product h_{t-1} U is small (batch rows) and repeats T times
with the same U, and BLAS re-packs U on every call: 70 GFLOP/s at (32 x 256) @ (256 x 1024) on
one core, against 170-190 for `packed_gemm`, which packs U once per sequence. The same tile does
x W over all steps up to I = 512 (155-187 GFLOP/s on one core against BLAS's 129-166 at
(1600..3200 x 64..512) @ (64..512 x 256..2048); BLAS is ahead beyond). For the weight gradients
x^T dz (K = T B long) `gemm_tn`, the tile on packed blocks, is 1-6% faster than BLAS over a whole
backward pass.
"""
import math
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from lstmkit.kernels import buffers

# No 'reassoc': it would undo the Cody-Waite split of ln 2. The loops are maps, not reductions,
# so they vectorise without it. No 'nnan'/'ninf' either: a NaN in the data must stay a NaN.
FASTMATH = {"nsz", "arcp", "contract", "afn"}


def jit(fn=None, inline=False):
    """Compile fn with the settings every kernel uses: cached on disk, no GIL, vectorisable
    division (error_model numpy), contracted multiply-adds. inline=True: compiled into each
    caller instead (for the per-row passes of a step: a call with its array arguments cost
    0.08 µs a row, 0.67 of 2.15 µs a step at B = 8, H = 64)."""
    if fn is None:
        return lambda f: jit(f, inline)
    return njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy",
                inline="always" if inline else "never")(fn)


# --- BLAS ----------------------------------------------------------------------------------------

def _blas_args(context, builder, dtype, kinds, values, types_):
    """LLVM values for a call to Numba's BLAS helpers: for each kind, "array" -> its data pointer,
    "scalar" -> a pointer to the value as dtype, "size" -> the value as intp, "char" -> a byte."""
    out = []
    for kind, val, ty in zip(kinds, values, types_):
        if kind == "array":
            out.append(builder.bitcast(context.make_array(ty)(context, builder, val).data, cgutils.voidptr_t))
        elif kind == "scalar":
            slot = cgutils.alloca_once_value(builder, context.cast(builder, val, ty, dtype))
            out.append(builder.bitcast(slot, cgutils.voidptr_t))
        elif kind == "size":
            out.append(context.cast(builder, val, ty, types.intp))
        else:
            out.append(builder.trunc(context.cast(builder, val, ty, types.int64), ir.IntType(8)))
    return out


def _blas_call(helper, kinds, args):
    """(signature, codegen) of an intrinsic calling Numba's BLAS helper (`numba_xxgemm`,
    `numba_xxgemv`: scipy's BLAS, column-major, Fortran argument order) on args of the given kinds
    (`_blas_args`), their arrays all float32 or all float64; the call returns the helper's status
    (0: done). None for other types."""
    dtypes = {a.dtype for a, k in zip(args, kinds) if k == "array"}
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    if dtype not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, values):
        arg_types = [ir.IntType(8)] + [cgutils.voidptr_t if k in ("array", "scalar") else
                                       context.get_value_type(types.intp) if k == "size" else ir.IntType(8)
                                       for k in kinds]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), arg_types), helper)
        kind = ir.Constant(ir.IntType(8), ord("s" if dtype == types.float32 else "d"))
        return builder.call(fn, [kind] + _blas_args(context, builder, dtype, kinds, values, signature.args))
    return types.int32(*args), codegen


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """c = alpha op(a) op(b) + beta c on the data pointers of arrays a, b, c."""
    return _blas_call("numba_xxgemm", ("char", "char", "size", "size", "size", "scalar", "array", "size", "array",
                                       "size", "scalar", "array", "size"),
                      (transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))


@intrinsic
def _xxgemv(typingctx, trans, m, n, alpha, a, lda, x, beta, y):
    """y = alpha op(a) x + beta y on the data pointers of arrays a, x, y (x and y contiguous)."""
    return _blas_call("numba_xxgemv", ("char", "size", "size", "scalar", "array", "size", "array", "scalar", "array"),
                      (trans, m, n, alpha, a, lda, x, beta, y))


_N, _T = ord("n"), ord("t")


@jit
def leading_dim(x):
    """The row stride of a 2-D array x in elements, at least 1: NumPy may give any stride to an
    axis of length 1, so a single row counts as packed."""
    return max(x.strides[0] // x.itemsize if x.shape[0] > 1 else x.shape[1], 1)


@jit
def gemm(a, b, c, beta, trans_a, trans_b):
    """c = op(a) @ op(b) + beta * c for row-major 2-D arrays with unit column stride.

    op(a) (M, K), op(b) (K, N), c (M, N); op is a transpose where trans_* is True. Row-major C is
    column-major C^T, so BLAS is asked for C^T = op(b)^T op(a)^T.
    """
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    if M == 0 or N == 0:
        return
    lda, ldb, ldc = leading_dim(a), leading_dim(b), leading_dim(c)
    if K == 0:
        c[...] = c * beta
        return
    if M == 1 and (not trans_a or lda == 1):      # one contiguous row: gemv (1 x 256 @ 256 x 1024: 12 against
        if trans_b:                                 # 29 µs by gemm)
            rc = _xxgemv(_T, K, N, 1.0, b, ldb, a, beta, c)
        else:
            rc = _xxgemv(_N, N, K, 1.0, b, ldb, a, beta, c)
    else:
        rc = _xxgemm(_T if trans_b else _N, _T if trans_a else _N, N, M, K, 1.0,
                     b, ldb, a, lda, beta, c, ldc)
    if rc != 0:
        raise RuntimeError("BLAS gemm unavailable (scipy.linalg.cython_blas)")


# --- vectorisable transcendental functions ------------------------------------------------------

@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int32 as float32, an int64 as float64."""
    out = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if out is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(out))

    return out(bits), codegen


@intrinsic
def _bits_of(typingctx, x):
    """The bits of a float32 as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


# float32 exp, here and in `gate_tile` on vectors: x clamped to EXP32_CLAMP (2^k stays a normal
# number), k = round(x / ln 2), r = x - k ln 2 with ln 2 = EXP32_LN2_HI - EXP32_LN2_LO (Cody-Waite:
# k EXP32_LN2_HI is exact), exp(x) = p(r) 2^k with p the Taylor polynomial EXP32_TAYLOR (highest
# degree first). The rounding: t = x / ln 2 + EXP_ROUND has a last place of 1 (it lies in [2^23,
# 2^24)), so it rounds x / ln 2 to the nearest integer k, and its low 9 bits hold k + 127, the
# exponent field of 2^k (|k| <= 127 after the clamp): t's bits shifted left by 23 are 2^k. Three
# operations fewer than floor, convert and add (inference at 16, 200, 64, 64 faster in 3 of 4
# alternating pairs, 1-6%).
EXP32_CLAMP = (-87.0, 88.0)
EXP32_LOG2E = 1.44269504
EXP32_LN2_HI, EXP32_LN2_LO = 0.693359375, 2.12194440e-4
EXP32_TAYLOR = (1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0)
EXP_ROUND = 1.5 * 2 ** 23 + 127


def vexp(x):
    """exp(x), vectorisable: use inside compiled loops only."""
    return math.exp(x)


@overload(vexp, inline="always", fastmath=FASTMATH)
def _vexp(x):
    if x == types.float32:
        def exp32(x):
            lo, hi = EXP32_CLAMP
            x = np.float32(lo) if x < np.float32(lo) else x
            x = np.float32(hi) if x > np.float32(hi) else x
            t = x * np.float32(EXP32_LOG2E) + np.float32(EXP_ROUND)   # k + 127 in its low bits
            k = t - np.float32(EXP_ROUND)
            r = x - k * np.float32(EXP32_LN2_HI) + k * np.float32(EXP32_LN2_LO)   # x - k ln 2
            p = np.float32(EXP32_TAYLOR[0])
            for c in EXP32_TAYLOR[1:]:
                p = p * r + np.float32(c)
            return p * _float_from_bits(np.int32(_bits_of(t) << np.int32(23)))
        return exp32
    if x == types.float64:
        def exp64(x):
            x = -708.0 if x < -708.0 else x
            x = 709.0 if x > 709.0 else x
            k = np.floor(x * 1.4426950408889634 + 0.5)
            r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10
            p = 1.0 / 6227020800.0
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * r + 1.0
            p = p * r + 1.0
            return p * _float_from_bits((np.int64(k) + 1023) << 52)
        return exp64
    return None


@intrinsic
def vrecip(typingctx, x):
    """1 / x, vectorisable: a division, correctly rounded, in any function that calls
    `wide_vectors` (which forbids LLVM's reciprocal estimates). The estimate with one Newton step
    was no faster on this AMD core (Zen 4: the sigmoid of 64K values 20.3 against 19.4 µs by
    division) and, where a loop ran narrower vectors or single values (`vrcpps`, `vrcpss`: 12
    bits), 2 ulps off; the 512-bit `vrcp14ps` is within 1 ulp."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        one = context.get_constant(signature.args[0], 1.0)
        return builder.fdiv(one, args[0], flags=("arcp", "afn", "ninf", "nsz", "contract"))
    return x(x), codegen


def vsigmoid(x):
    """1 / (1 + exp(-x)), vectorisable (`vexp`, `vrecip`): use inside compiled loops."""
    return 1.0 / (1.0 + math.exp(-x))


@overload(vsigmoid, inline="always", fastmath=FASTMATH)
def _vsigmoid(x):
    if isinstance(x, types.Float):
        one = np.float32(1.0) if x == types.float32 else 1.0

        def sigmoid(x):
            return vrecip(one + vexp(-x))
        return sigmoid
    return None


def vtanh(x):
    """tanh(x) = 2 / (1 + exp(-2x)) - 1, vectorisable (`vexp`, `vrecip`): use inside compiled loops."""
    return math.tanh(x)


@overload(vtanh, inline="always", fastmath=FASTMATH)
def _vtanh(x):
    if isinstance(x, types.Float):
        one = np.float32(1.0) if x == types.float32 else 1.0
        two = np.float32(2.0) if x == types.float32 else 2.0

        def tanh(x):
            return two * vrecip(one + vexp(-two * x)) - one
        return tanh
    return None


# --- wide vectors and the register-tiled products on packed operands -------------------------------

@intrinsic
def wide_vectors(typingctx):
    """Mark the calling compiled function to vectorise with 512-bit registers where the CPU has
    them. LLVM's default for recent Intel cores is 256 bits; the loops here are arithmetic-bound,
    so AVX-512 makes exp and sigmoid about 25% faster. Harmless on CPUs without AVX-512."""
    def codegen(context, builder, signature, args):
        attrs = builder.function.attributes
        set.add(attrs, '"prefer-vector-width"="512"')      # string attributes: llvmlite has no API
        set.add(attrs, '"min-legal-vector-width"="512"')
        set.add(attrs, '"reciprocal-estimates"="!vec-divf,!divf"')   # divisions: see vrecip
        return context.get_dummy_value()
    return types.void(), codegen


TILE_ROWS, TILE_COLS = 8, 32   # the packed product works on tiles of 8 rows x 32 columns
ROW_COLS = 128                 # the one-row product (batches under 8) on 128 columns at a time


def _make_tile(ROWS, COLS, prefetch):
    """A compiled tile product of ROWS x COLS (float32: COLS / 16 vector registers per row), which
    asks for B's rows `prefetch` values of k ahead into L1 (0: never)."""
    def tile(typingctx, a, a_off, a_rs, a_ks, nrows, b, b_off, b_ks, c, c_off, c_rs, k0, k1, acc, stream):
        return _tile_codegen(ROWS, COLS, prefetch, a, a_off, a_rs, a_ks, nrows, b, b_off, b_ks, c, c_off, c_rs, k0,
                             k1, acc, stream)
    tile.__name__ = f"_tile_{ROWS}x{COLS}"
    return intrinsic(tile)


def _tile_codegen(ROWS, COLS, prefetch, a, a_off, a_rs, a_ks, nrows, b, b_off, b_ks, c, c_off, c_rs, k0, k1, acc,
                  stream):
    """C[r, 0:COLS] (+)= sum over k in [k0, k1) of A[r, k] * B[k, 0:COLS] for the rows r < nrows of
    a ROWS x COLS tile, on flat element offsets into the data of arrays a, b, c:

        A[r, k] = a.data[a_off + r * a_rs + k * a_ks]    (any strides: a row or a column of a)
        B[k, :] = b.data[b_off + k * b_ks : ... + COLS]   (COLS contiguous values per k)
        C[r, :] = c.data[c_off + r * c_rs : ... + COLS]

    The sum is added to C where acc is true, else it replaces C (whose old values are ignored), by
    non-temporal stores where stream is true (C's rows then 64-byte aligned: `packed_gemm`).
    Written in LLVM IR so that the accumulator tile stays in vector registers for the whole k
    loop (8 x 32 and 1 x 128 float32: 16 and 8 AVX-512 registers); Numba's own loops would store
    it each k. Rows past nrows repeat the last valid row and are not stored. The sum starts from
    zero and C is added at the end, its lines asked for (a hint) at the start, so that no FMA
    waits for C, which often comes from memory (the weight gradients' 16 MB per thread at H =
    1024; with gemm_tn's blocks, the backward at 128, 50, 1024, 1024 went 724-750 -> 682-725 ms).

    With prefetch > 0, each k also asks for row k + prefetch of B into L1 (a hint: it never
    faults, even past the end of b): the panels of B stream from L2 for every tile of rows, and
    the hardware alone does not fetch them early enough (one core, 8 x 32 tiles, 64 x 1024 @
    1024 x 4096: 155 -> 168 GFLOP/s; 32 x 512 @ 512 x 2048: 163 -> 166; level where B stays in
    L1, and for the 1 x 128 tile, whose loads are L2-bound anyway)."""
    dtype = c.dtype
    if not (a.dtype == b.dtype == dtype) or dtype not in (types.float32, types.float64):
        return None
    sig = types.void(a, a_off, a_rs, a_ks, nrows, b, b_off, b_ks, c, c_off, c_rs, k0, k1, acc, stream)

    def codegen(context, builder, signature, args):
        wide = builder.function.attributes
        set.add(wide, '"prefer-vector-width"="512"')
        set.add(wide, '"min-legal-vector-width"="512"')
        i64 = ir.IntType(64)
        fty = context.get_value_type(dtype)
        width = 16 if dtype == types.float32 else 8
        nvec = COLS // width
        vec = ir.VectorType(fty, width)
        vptr = vec.as_pointer()
        const = lambda v: ir.Constant(i64, v)
        tys = signature.args
        A = context.make_array(tys[0])(context, builder, args[0])
        Bm = context.make_array(tys[5])(context, builder, args[5])
        C = context.make_array(tys[8])(context, builder, args[8])
        a_off, a_rs, a_ks, n, b_off, b_ks, c_off, ldc, k0, k1 = (
            context.cast(builder, args[i], tys[i], types.int64) for i in (1, 2, 3, 4, 6, 7, 9, 10, 11, 12))
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]),
            f"llvm.fma.v{width}{'f32' if dtype == types.float32 else 'f64'}")
        arow, crow = [], []
        for r in range(ROWS):
            valid = builder.icmp_signed("<", const(r), n)
            rr = builder.select(valid, const(r), builder.sub(n, const(1)))
            arow.append(builder.gep(A.data, [builder.add(a_off, builder.mul(rr, a_rs))]))
            crow.append(builder.gep(C.data, [builder.add(c_off, builder.mul(rr, ldc))]))
        keep = builder.icmp_signed("!=", context.cast(builder, args[13], tys[13], types.int64), const(0))
        zero = ir.Constant(vec, [ir.Constant(fty, 0.0)] * width)
        hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [cgutils.voidptr_t] + [ir.IntType(32)] * 3), "llvm.prefetch.p0i8")
        line = 64 // (4 if dtype == types.float32 else 8)       # values per cache line

        def fetch(row, write):
            """Ask for the cache lines of COLS values from row into L1 (locality 3, data)."""
            for v in range(0, COLS, line):
                builder.call(hint, [builder.bitcast(builder.gep(row, [const(v)]), cgutils.voidptr_t),
                                    *(ir.Constant(ir.IntType(32), i) for i in (int(write), 3, 1))])

        with builder.if_then(keep):          # C is added at the end: fetch it meanwhile
            for r in range(ROWS):
                fetch(crow[r], True)
        brow = lambda k: builder.gep(Bm.data, [builder.add(b_off, builder.mul(k, b_ks))])
        ahead = (lambda row: fetch(builder.gep(row, [builder.mul(const(prefetch), b_ks)]), False)) if prefetch else None
        out = register_sums(builder, fma, vec, arow, a_ks, brow, [[zero] * nvec] * ROWS, k0, k1, "tile", ahead)
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])

        def store(streamed):
            """C (+)= the sums, or (streamed) C = the sums by non-temporal stores (64-byte aligned)."""
            for r in range(ROWS):
                with builder.if_then(builder.icmp_signed("<", const(r), n)):
                    for v in range(nvec):
                        at = builder.bitcast(builder.gep(crow[r], [const(width * v)]), vptr)
                        if streamed:
                            st = builder.store(out[r][v], at, align=64)
                            st.set_metadata("nontemporal", nontemporal)
                        else:
                            old = builder.select(keep, builder.load(at, align=4), zero)
                            builder.store(builder.fadd(old, out[r][v]), at, align=4)
        streaming = builder.and_(builder.not_(keep), builder.icmp_signed(
            "!=", context.cast(builder, args[14], tys[14], types.int64), const(0)))
        with builder.if_else(streaming) as (by_stream, by_cache):
            with by_stream:
                store(True)
            with by_cache:
                store(False)
        return context.get_dummy_value()

    return sig, codegen


def register_sums(builder, fma, vec, arows, a_ks, b_row, init, k0, k1, name, hint=None):
    """Emit the k loop of a register tile (LLVM IR): sums[r][v] = init[r][v] + the sum over k in
    [k0, k1) of A[r, k] * B[k, v], with A[r, k] the value at arows[r] + k a_ks (broadcast to a
    vector) and B[k, v] the v-th vector of the row at b_row(k) (len(init[0]) vectors a row);
    hint(row), if given, is called with each k's row of B (a prefetch). The sums stay in vector
    registers for the whole loop. Returns them as values after the loop (init where it ran no k)."""
    return register_sums_together(builder, fma, vec, [(arows, a_ks, b_row, init, hint, 1)], k0, k1, name)[0]


def register_sums_together(builder, fma, vec, tiles, k0, k1, name):
    """`register_sums` of several tiles, (arows, a_ks, b_row, init, hint, step) each, in one loop
    over j in [k0, k1): each tile takes its values of k from step j to step j + step - 1, in
    order, so that the loads of one and the multiply-adds of another overlap. Returns each tile's
    sums."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    width = vec.count
    entry = builder.block
    loop, done = builder.append_basic_block(name + ".loop"), builder.append_basic_block(name + ".done")
    builder.cbranch(builder.icmp_signed("<", k0, k1), loop, done)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    sums = [[[builder.phi(vec) for _ in tile[3][0]] for _ in tile[3]] for tile in tiles]
    new = []
    broadcast = ir.Constant(ir.VectorType(i32, width), [0] * width)
    for (arows, a_ks, b_row, init, hint, step), tile_sums in zip(tiles, sums):
        tile_new = tile_sums
        for s in range(step):
            kk = builder.add(builder.mul(k, ir.Constant(i64, step)), ir.Constant(i64, s)) if step > 1 else k
            row = b_row(kk)
            bv = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, width * v)]), vec.as_pointer()),
                               align=4) for v in range(len(init[0]))]
            if hint is not None:
                hint(row)
            kofs = builder.mul(kk, a_ks)
            last = []
            for r, row_sums in enumerate(tile_new):
                a = builder.insert_element(ir.Constant(vec, ir.Undefined),
                                           builder.load(builder.gep(arows[r], [kofs])), ir.Constant(i32, 0))
                a = builder.shuffle_vector(a, ir.Constant(vec, ir.Undefined), broadcast)
                last.append([builder.call(fma, [a, b, acc]) for b, acc in zip(bv, row_sums)])
            tile_new = last
        new.append(tile_new)
    k_next = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(k0, entry)
    k.add_incoming(k_next, loop)
    for (_, _, _, init, _, _), tile_sums, tile_new in zip(tiles, sums, new):
        for r, row_sums in enumerate(tile_sums):
            for v, acc in enumerate(row_sums):
                acc.add_incoming(init[r][v], entry)
                acc.add_incoming(tile_new[r][v], loop)
    builder.cbranch(builder.icmp_signed("<", k_next, k1), loop, done)
    builder.position_at_end(done)
    out = []
    for (_, _, _, init, _, _), tile_new in zip(tiles, new):
        tile_out = [[builder.phi(vec) for _ in init[0]] for _ in init]
        for r, row_out in enumerate(tile_out):
            for v, acc in enumerate(row_out):
                acc.add_incoming(init[r][v], entry)
                acc.add_incoming(tile_new[r][v], loop)
        out.append(tile_out)
    return out


@intrinsic
def row_and_tile(typingctx, a, a_off, a_ks, p, p_off, p_ks, K1, c, c_off, x, x_off, x_rs, nrows, q, q_off, K2, z,
                 z_off, z_rs, acc):
    """Two float32 products in one k loop (flat element offsets into the arrays' data, as `_tile`):

        c[c_off : c_off + 128] += sum over k < K1 of a[a_off + k a_ks] * p[p_off + k p_ks : ... + 128]
        z[z_off + r z_rs : ... + 32] (+)= sum over k < K2 of x[x_off + r x_rs + k] * q[q_off + 32 k : ... + 32]

    for the rows r < nrows of the second (an 8 x 32 tile; rows past nrows repeat the last one and
    are not stored; c is left alone where K1 = 0). The second continues from z where acc is true
    (its sums start from z's values: a tile's k split in two runs gives the bits of one run). The
    first is a one-row product of a panel of U, bound by reading the panel from L2 with half of the
    multiply-add slots idle; the second, part of a tile of x W for later steps, takes them
    (`row_product_with_x_w`)."""
    f32 = types.float32
    if any(getattr(arr, "dtype", None) != f32 for arr in (a, p, c, x, q, z)):
        return None
    sig = types.void(a, a_off, a_ks, p, p_off, p_ks, K1, c, c_off, x, x_off, x_rs, nrows, q, q_off, K2, z, z_off,
                     z_rs, acc)

    def codegen(context, builder, signature, args):
        for attr in ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"'):
            set.add(builder.function.attributes, attr)
        i64, fty = ir.IntType(64), ir.FloatType()
        vec = ir.VectorType(fty, 16)
        tys = signature.args
        data = lambda i: context.make_array(tys[i])(context, builder, args[i]).data
        num = lambda i: context.cast(builder, args[i], tys[i], types.int64)
        const = lambda v: ir.Constant(i64, v)
        A, P, C, X, Q, Z = (data(i) for i in (0, 3, 7, 9, 13, 16))
        a_off, a_ks, p_off, p_ks, K1, c_off, x_off, x_rs, n, q_off, K2, z_off, z_rs = (
            num(i) for i in (1, 2, 4, 5, 6, 8, 10, 11, 12, 14, 15, 17, 18))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.fma.v16f32")
        zero = ir.Constant(vec, [ir.Constant(fty, 0.0)] * 16)
        at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vec.as_pointer())
        keep = builder.icmp_signed("!=", num(19), const(0))
        xrows, zrows, start = [], [], []
        for r in range(TILE_ROWS):
            rr = builder.select(builder.icmp_signed("<", const(r), n), const(r), builder.sub(n, const(1)))
            xrows.append(builder.gep(X, [builder.add(x_off, builder.mul(rr, x_rs))]))
            zrows.append([at(Z, builder.add(z_off, builder.add(builder.mul(rr, z_rs), const(16 * v))))
                          for v in range(TILE_COLS // 16)])
            start.append([builder.select(keep, builder.load(ptr, align=4), zero) for ptr in zrows[-1]])
        row = ([builder.gep(A, [a_off])], a_ks, lambda k: builder.gep(P, [builder.add(p_off, builder.mul(k, p_ks))]))
        tile = (xrows, const(1), lambda k: builder.gep(Q, [builder.add(q_off, builder.mul(k, const(TILE_COLS)))]))
        half = builder.sdiv(K1, const(2))                  # two values of k of the row to one of the tile
        both = builder.select(builder.icmp_signed("<", half, K2), half, K2)
        sums = register_sums_together(builder, fma, vec, [(*row, [[zero] * (ROW_COLS // 16)], None, 2),
                                                          (*tile, start, None, 1)], const(0), both, "both")
        row_sums = register_sums(builder, fma, vec, *row, sums[0], builder.mul(both, const(2)), K1, "row")
        tile_sums = register_sums(builder, fma, vec, *tile, sums[1], both, K2, "tile")
        with builder.if_then(builder.icmp_signed(">", K1, const(0))):
            for v in range(ROW_COLS // 16):
                ptr = at(C, builder.add(c_off, const(16 * v)))
                builder.store(builder.fadd(builder.load(ptr, align=4), row_sums[0][v]), ptr, align=4)
        for r in range(TILE_ROWS):
            with builder.if_then(builder.icmp_signed("<", const(r), n)):
                for sum_, ptr in zip(tile_sums[r], zrows[r]):
                    builder.store(sum_, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


TILE_PREFETCH = 16   # the 8 x 32 tile asks for B's rows this many values of k ahead
_tile = _make_tile(TILE_ROWS, TILE_COLS, TILE_PREFETCH)
_row = _make_tile(1, ROW_COLS, 0)


@jit
def pack(U, packed, transpose):
    """Lay U (K, N) out as packed (N/W, K, W) column panels, or U^T when transpose (U (N, K)).
    U^T is read in strips of 8 of its columns, 64 values long, that stay in L1 (a 128 x 512
    transpose into one 128-column panel: 62 -> 24 µs; 32-column panels: the same within 4%)."""
    P, K, W = packed.shape
    if not transpose:
        for p in range(P):
            for k in range(K):
                for j in range(W):
                    packed[p, k, j] = U[k, p * W + j]
        return
    for p in range(P):
        for j0 in range(0, W, 8):
            for k0 in range(0, K, 64):
                for k in range(k0, min(K, k0 + 64)):
                    for j in range(j0, j0 + 8):
                        packed[p, k, j] = U[p * W + j, k]


PACKED_CHUNK = 1 << 16   # values of a per block of rows in packed_gemm (256 KB float32: stays in L2)
PACKED_DEPTH = 512       # values of k per block in packed_gemm when K is over twice that


@jit
def packed_gemm(a, packed, c, accumulate, stream=False, descending=False):
    """c (M, N) (+)= a (M, K) @ U, with U given as packed (N/W, K, W) by `pack`: added to c where
    accumulate, else c = a @ U. Or, a (S, M, K) and c (S, M, N), the same for each of S steps
    (strided views, such as a thread's batch rows of every step). Rows have unit stride. Panels
    of W = 32 columns run in tiles of 8 rows, panels of W = 128 one row at a time (for M under 8,
    where an 8-row tile would mostly compute rows it throws away). Loops: blocks of rows of a
    (PACKED_CHUNK values, kept in L2), then blocks of PACKED_DEPTH values of k when K is long
    (dz_t U^T at H = 1024 has K = 4096: a whole panel, 512 KB, would not stay in L2 while its
    rows are done), then panels (each kept in L1 or L2 over the block's rows), then rows.

    stream: c = a @ U is written by non-temporal stores, which bypass the caches (where c is too
    large to stay in them, they spare reading its lines in before writing them and keep the
    panels and rows of a in L2: one core, 3200 x 512 @ 512 x 2048 into 26 MB, 161-168 against
    142-152 GFLOP/s), given 8-row tiles, one block of k and c's tiles 64-byte aligned; a fence
    at the end orders them before any later store (a release to another thread).

    descending: k runs from its last value down, and the panels from the last. A per-step
    product that alternates its direction every step starts on the values the step before ended
    on, which are still in L1 (one core, 1 x 128 @ 128 x 512, 256 KB: 1.74 -> 1.63 µs a product;
    1 x 64 @ 64 x 256: 0.425 -> 0.314)."""
    a3, c3 = _as_steps(a), _as_steps(c)
    S, M, K = a3.shape
    P, _, W = packed.shape
    as0, lda = a3.strides[0] // a3.itemsize, leading_dim(a3[0])
    cs0, ldc = c3.strides[0] // c3.itemsize, leading_dim(c3[0])
    depth = K if K <= 2 * PACKED_DEPTH else PACKED_DEPTH
    line = 64 // c3.itemsize
    stream = (stream and not accumulate and depth == K and W == TILE_COLS and c3.ctypes.data % 64 == 0
              and cs0 % line == 0 and ldc % line == 0)
    rows = max(TILE_ROWS, PACKED_CHUNK // max(depth, 1) // TILE_ROWS * TILE_ROWS)   # per block
    m_block = max(TILE_ROWS, min(rows, -(-M // TILE_ROWS) * TILE_ROWS))
    s_block = max(1, rows // max(M, 1))
    blocks = -(-max(K, 1) // max(depth, 1))
    for s0 in range(0, S, s_block):
        s1 = min(S, s0 + s_block)
        for m0 in range(0, M, m_block):
            m1 = min(M, m0 + m_block)
            for kb in range(blocks):
                k0 = (blocks - 1 - kb if descending else kb) * depth
                k1 = min(K, k0 + depth)
                acc = accumulate or kb > 0
                top, dk = (k0 + k1 - 1, -1) if descending else (0, 1)   # the tile's k-th value is top + dk k
                for pi in range(P):
                    p = P - 1 - pi if descending else pi
                    b_off = p * K * W + top * W
                    for s in range(s0, s1):
                        if W == TILE_COLS:
                            for r0 in range(m0, m1, TILE_ROWS):
                                _tile(a3, s * as0 + r0 * lda + top, lda, dk, min(TILE_ROWS, m1 - r0), packed, b_off,
                                      dk * W, c3, s * cs0 + r0 * ldc + p * W, ldc, k0, k1, acc, stream)
                        else:
                            for r in range(m0, m1):
                                _row(a3, s * as0 + r * lda + top, lda, dk, 1, packed, b_off, dk * W,
                                     c3, s * cs0 + r * ldc + p * W, ldc, k0, k1, acc, False)
    if stream:
        _store_fence()


@jit
def row_product_with_x_w(h, Up, c, t, x, Wp, z, done):
    """The per-step product of one row with x W for later steps in its idle multiply-add slots
    (`row_and_tile`): c (N,) += h (K,) @ U, U packed as Up (N/128, K, 128), its panels and k
    taken downwards on odd t (as `packed_gemm`'s descending), each panel beside the next half of
    an 8 x 32 tile of x W not yet done: half `done` of the order of `x_w_half` of z (S, M) = x
    (S, I) @ W, W packed as Wp (M/32, I, 32). First the halves that step t + 1's row needs, if not
    done (`x_w_halves`). Returns the halves done. (At 1, 100, 128, 128 on two threads, two panels
    a step and a thread, one tile a step: inference 263-268 -> 238-241 µs; 245-250 with a whole
    tile beside every second panel.)"""
    P, K, W = Up.shape
    S = x.shape[0]
    total = 2 * (-(-S // TILE_ROWS) - 1) * Wp.shape[0]
    done = x_w_halves(x, Wp, z, done, min(total, 2 * ((t + 1) // TILE_ROWS) * Wp.shape[0]))
    top, dk = (K - 1, -1) if t % 2 == 1 else (0, 1)
    for i in range(P):
        p = P - 1 - i if t % 2 == 1 else i
        if done < total:
            x_off, nrows, q_off, k_count, z_off, acc = x_w_half(x, Wp, z, done)
            row_and_tile(h, top, dk, Up, (p * K + top) * W, dk * W, K, c, p * W, x, x_off, x.shape[1], nrows,
                         Wp, q_off, k_count, z, z_off, z.shape[1], acc)
            done += 1
        else:
            _row(h, top, 1, dk, 1, Up, (p * K + top) * W, dk * W, c, p * W, W, 0, K, True, False)
    return done


@jit
def x_w_half(x, Wp, z, i):
    """Half i of the 8 x 32 tiles of z = x W in the order of `row_product_with_x_w`: tile i // 2
    (rows 8 (1 + i // 2P) on, panel i // 2 % P; from -2P: block 0), values of k 0:I/2 (i even)
    or I/2:I, as row_and_tile's (x_off, nrows, q_off, K2, z_off, acc)."""
    S, I = x.shape
    Pw, M = Wp.shape[0], z.shape[1]
    tile, second = i // 2, i % 2
    r0, pw, k0 = (1 + tile // Pw) * TILE_ROWS, tile % Pw, second * (I // 2)
    k1 = I // 2 if second == 0 else I
    return r0 * I + k0, min(TILE_ROWS, S - r0), (pw * I + k0) * TILE_COLS, k1 - k0, r0 * M + pw * TILE_COLS, second


@jit
def x_w_halves(x, Wp, z, done, until):
    """Halves done..until - 1 of `x_w_half`, alone. Returns max(done, until)."""
    for i in range(done, until):
        x_off, nrows, q_off, k_count, z_off, acc = x_w_half(x, Wp, z, i)
        row_and_tile(x, 0, 1, Wp, 0, 0, 0, z, 0, x, x_off, x.shape[1], nrows, Wp, q_off, k_count, z, z_off,
                     z.shape[1], acc)
    return max(done, until)


@intrinsic
def _store_fence(typingctx):
    """A full fence: orders every earlier store, non-temporal ones included (x86 mfence)."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


def _as_steps(a):
    """a (M, K) as (1, M, K); a (S, M, K) as it is."""
    return a


@overload(_as_steps, inline="always")
def _as_steps_overload(a):
    if isinstance(a, types.Array) and a.ndim == 2:
        return lambda a: a[None, :, :]
    if isinstance(a, types.Array) and a.ndim == 3:
        return lambda a: a
    return None


def make_copy(N):
    """An intrinsic copying N values, src.data[src_off:src_off + N] to dst.data[dst_off:...], as
    one vector load and store (flat element offsets, as in `_tile_codegen`). A loop of N
    element copies does not vectorise: LLVM unrolls it and then cannot tell that src and dst
    do not overlap (gemm_tn's packing ran at about 1.5 values a cycle), and a row of a strided
    view (a thread's batch rows) has a stride known only at run time."""
    def copy(typingctx, src, src_off, dst, dst_off):
        if src.dtype != dst.dtype or dst.dtype not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            tys = signature.args
            vptr = ir.VectorType(context.get_value_type(dst.dtype), N).as_pointer()
            align = 4 if dst.dtype == types.float32 else 8

            def at(i):
                data = context.make_array(tys[i])(context, builder, args[i]).data
                return builder.bitcast(builder.gep(data, [context.cast(builder, args[i + 1], tys[i + 1],
                                                                       types.int64)]), vptr)
            builder.store(builder.load(at(0), align=align), at(2), align=align)
            return context.get_dummy_value()
        return types.void(src, src_off, dst, dst_off), codegen
    copy.__name__ = f"_copy_{N}"
    return intrinsic(copy)


_copy_a, _copy_b = make_copy(TILE_ROWS), make_copy(TILE_COLS)   # a row's values of a tile of a, of a panel of b


@jit
def _step_strides(a3):
    """The strides of the first two axes of a3 (S, R, M), in elements."""
    return a3.strides[0] // a3.itemsize, a3.strides[1] // a3.itemsize


GEMM_TN_DEPTH = 256   # k rows per block of gemm_tn: a 256 x 32 panel of b (32 KB) stays in L1
GEMM_TN_TILES = 64    # tiles of 8 columns of a per block of gemm_tn (512 KB packed: stays in L2)
GEMM_TN_SKEW = 2      # spare k rows after each packed tile of a and panel of b (see gemm_tn)


def gemm_tn_scratch(M, panels, dtype):
    """The (shape, dtype) of the two pack buffers gemm_tn needs for M columns of a and `panels`
    column panels of b (for `buffers.empty_group`)."""
    return [(((M + TILE_ROWS - 1) // TILE_ROWS, GEMM_TN_DEPTH + GEMM_TN_SKEW, TILE_ROWS), dtype),
            ((panels, GEMM_TN_DEPTH + GEMM_TN_SKEW, TILE_COLS), dtype)]


@jit
def gemm_tn(a, a2, b, c, p0, p1, ap, bp, accumulate):
    """c[:, 32 p0 : 32 p1] (+)= [a a2]^T @ b[:, 32 p0 : 32 p1] (added where accumulate) for a
    (K, M1), a2 (K, M2) (M2 may be 0), b (K, N), c (M1 + M2, N), row-major with unit column
    stride and N a multiple of 32: the weight gradients x^T dz and h^T dz over all steps (both at
    once where dz is the same: b is packed once). Or a (S, R, M1), a2 (S, R, M2) and b (S, R, N),
    K = S R (strided views such as a thread's batch rows of every step). Against OpenBLAS on one
    thread, on a thread's half of the columns: 144 vs 107 GFLOP/s at K, M, N = 100, 128, 512, level
    from M = 64 to 512, behind at M = 1024 (123 vs 150, yet no change measurable in a training
    step at 128, 50, 1024, 1024).
    ap, bp: scratch from gemm_tn_scratch (at least p1 - p0 panels).

    Per block of D = GEMM_TN_DEPTH values of k, the block of a is packed as (M/8, D, 8) tiles and
    the block of b as (panels, D, 32), both read row by row, so that the tiles read contiguous
    memory (rows of a and b are often 4 KB apart and would evict each other from L1), a vector
    at a time (`make_copy`; a's values one by one where M1 or M2 is not a multiple of 8: at 16,
    200, 64, 64 the backward took 1.79-1.91 ms against 1.97-2.04 with every value copied alone).
    The tiles then run GEMM_TN_TILES tiles of a at a time over all panels, so that those stay in
    L2 (one core, K, M, N = 6400, 2048, 2048 on packed blocks: 142 -> 153 GFLOP/s). The packed
    tiles and panels lie D + GEMM_TN_SKEW rows apart, not D: at D their starts are 8 and 32 KB
    apart, so that the lines a copy of one row of the block writes (16 tiles and 8 panels at 16,
    200, 64, 64) all fall in the same few sets of the 12-way L1 and evict one another (most
    likely; the packing of a thread's rows there, one core: 188 -> 113 µs; the backward, five
    alternating pairs, 1.86-1.95 -> 1.79-1.87 ms)."""
    a3, a23, b3 = _as_steps(a), _as_steps(a2), _as_steps(b)
    S, R, M1 = a3.shape
    M = M1 + a23.shape[2]
    K = S * R
    D, Dp = GEMM_TN_DEPTH, GEMM_TN_DEPTH + GEMM_TN_SKEW      # k rows per block, and per packed tile or panel
    mt = (M + TILE_ROWS - 1) // TILE_ROWS
    ldc = leading_dim(c)
    whole_tiles = M1 % TILE_ROWS == 0 and M % TILE_ROWS == 0
    (as0, as1), (a2s0, a2s1), (bs0, bs1) = _step_strides(a3), _step_strides(a23), _step_strides(b3)
    if K == 0 and not accumulate:
        for r in range(M):
            for j in range(p0 * TILE_COLS, p1 * TILE_COLS):
                c[r, j] = 0.0
    for k0 in range(0, K, D):
        kd = min(K, k0 + D) - k0
        for k in range(kd):          # a last tile's rows past M are never read
            s, r = divmod(k0 + k, R)
            a_at, a2_at, b_at = s * as0 + r * as1, s * a2s0 + r * a2s1, s * bs0 + r * bs1
            if whole_tiles:
                for q in range(M1 // TILE_ROWS):
                    _copy_a(a3, a_at + q * TILE_ROWS, ap, (q * Dp + k) * TILE_ROWS)
                for q in range(M1 // TILE_ROWS, mt):
                    _copy_a(a23, a2_at + q * TILE_ROWS - M1, ap, (q * Dp + k) * TILE_ROWS)
            else:
                ar, a2r = a3[s, r], a23[s, r]
                for m in range(M1):
                    ap[m // TILE_ROWS, k, m % TILE_ROWS] = ar[m]
                for m in range(M1, M):
                    ap[m // TILE_ROWS, k, m % TILE_ROWS] = a2r[m - M1]
            for p in range(p1 - p0):
                _copy_b(b3, b_at + (p0 + p) * TILE_COLS, bp, (p * Dp + k) * TILE_COLS)
        for q0 in range(0, mt, GEMM_TN_TILES):
            for p in range(p1 - p0):
                for q in range(q0, min(mt, q0 + GEMM_TN_TILES)):
                    _tile(ap, q * Dp * TILE_ROWS, 1, TILE_ROWS, min(TILE_ROWS, M - q * TILE_ROWS), bp,
                          p * Dp * TILE_COLS, TILE_COLS, c, q * TILE_ROWS * ldc + (p0 + p) * TILE_COLS, ldc, 0, kd,
                          accumulate or k0 > 0, False)


# --- a barrier for threads that run the time steps together -------------------------------------

def _make_load(ordering):
    """An intrinsic arr[idx] of an int64 array, read atomically with LLVM's ordering."""
    def load(typingctx, arr, idx):
        if arr != types.int64[::1]:
            return None

        def codegen(context, builder, signature, args):
            ptr = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
            return builder.load_atomic(ptr, ordering, 8)
        return types.int64(arr, idx), codegen
    load.__name__ = f"_load_{ordering}"
    return intrinsic(load)


load_acquire = _make_load("acquire")      # sees every write another thread released before it
_load_seq_cst = _make_load("seq_cst")     # ... and is ordered with every seq_cst store


def _make_store(ordering):
    """An intrinsic arr[idx] = value for an int64 array, atomic with LLVM's ordering."""
    def store(typingctx, arr, idx, value):
        if arr != types.int64[::1]:
            return None

        def codegen(context, builder, signature, args):
            ptr = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
            builder.store_atomic(context.cast(builder, args[2], signature.args[2], types.int64), ptr, ordering, 8)
            return context.get_dummy_value()
        return types.void(arr, idx, value), codegen
    store.__name__ = f"_store_{ordering}"
    return intrinsic(store)


store_release = _make_store("release")   # visible to other threads after every earlier write
_store_seq_cst = _make_store("seq_cst")   # also before any later read (a full fence)


@intrinsic
def _spin_pause(typingctx):
    """A spin-wait hint (x86 `pause`; nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        if platform.machine().lower() in ("x86_64", "amd64", "i686"):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _yield_cpu(typingctx):
    """sched_yield(): let another thread run on this core."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


SYNC_STRIDE = 16        # int64 slots per thread in a barrier array: one 128-byte line each
SPINS_BEFORE_YIELD = 1000
RELEASED = 1 << 62      # every slot of a barrier array after a failure: every wait on it ends


def barrier_array(parts):
    """The shared state of `barrier` for `parts` threads, zeroed."""
    return buffers.zeros(parts * SYNC_STRIDE, np.int64)    # aligned: each slot on its own line


@jit
def spin_turn(spins):
    """One turn of a spin-wait (pause), giving the core away every SPINS_BEFORE_YIELD turns, so
    that a busy machine slows a wait down but does not stall it. Returns the turns counted."""
    _spin_pause()
    spins += 1
    if spins == SPINS_BEFORE_YIELD:
        _yield_cpu()
        spins = 0
    return spins


@jit
def barrier(sync, q, step):
    """Thread q of sync.size / SYNC_STRIDE has finished `step` (1, 2, ...): publish that and wait
    until every thread has. About 0.2 µs on two idle cores."""
    store_release(sync, q * SYNC_STRIDE, step)
    for p in range(sync.size // SYNC_STRIDE):
        spins = 0
        while load_acquire(sync, p * SYNC_STRIDE) < step:
            spins = spin_turn(spins)


# --- handing jobs to spinning threads (`threads.run_parallel`) ------------------------------------
# A thread that sleeps on a lock costs 30-80 µs to wake on a virtual machine (the idle core halts),
# and a Python thread that waits for the GIL sleeps. So the crew's threads spin, without the GIL,
# for about a millisecond after each job; the caller posts a job from compiled code (it holds no
# GIL then) and waits until each worker's part has started (it holds no GIL either) before taking
# the GIL to start its own part.

STARTED = 1                     # slot of a thread's line in a barrier array: its part has started
AWAITING = 2                    # slot of the caller's line: it waits for the workers, without the GIL
RETURN_AT_ONCE = 2              # the same slot of a worker's line: its part ends long before the caller's
POSTED, DONE, ASLEEP = 0, 1, 2  # slots of a worker's line in the crew's mailbox


@jit
def started(sync, q):
    """Thread q runs its part, without the GIL: the caller of `threads.run_parallel` may take the
    GIL to start its own. Every compiled part run by run_parallel calls this first (the forward
    parts through `common.project`)."""
    store_release(sync, q * SYNC_STRIDE + STARTED, 1)


@jit
def finished(sync, q):
    """The end of thread q's part. A worker (q > 0) waits here, spinning, until the caller waits
    for it without the GIL (`await_done`): both ending at once, one would find the GIL taken and
    sleep. A worker whose line says RETURN_AT_ONCE (its part ends long before the caller's, which
    holds no GIL meanwhile) returns at once: its return to Python then leaves the caller's end
    (at 1, 100, 128, 128, 4 against 5.5-11 µs from the caller's last step to its return)."""
    if q > 0 and sync[q * SYNC_STRIDE + RETURN_AT_ONCE] == 0:
        spins = 0
        while load_acquire(sync, AWAITING) == 0:
            spins = spin_turn(spins)


@jit
def post(mail, workers, seq, sync, wake_sent):
    """Hand job seq to workers 0..workers-1 (they run threads 1..workers of sync) and wait until
    each has started its part (or finished). Returns -1 then; or, unless wake_sent, as soon as a
    worker is asleep, that worker (wake it, then call again with wake_sent)."""
    for w in range(workers):
        _store_seq_cst(mail, w * SYNC_STRIDE + POSTED, seq)
    for w in range(workers):
        spins = 0
        while (load_acquire(sync, (w + 1) * SYNC_STRIDE + STARTED) == 0
               and load_acquire(mail, w * SYNC_STRIDE + DONE) != seq):
            if not wake_sent and _load_seq_cst(mail, w * SYNC_STRIDE + ASLEEP) != 0:
                return w
            spins = spin_turn(spins)
    return -1


@jit
def await_job(mail, w, last, turns):
    """Worker w: spin until a job other than `last` is posted and return its number; after
    `turns` turns without one, mark the worker asleep and return 0 (it then sleeps in Python)."""
    for _ in range(turns):
        seq = load_acquire(mail, w * SYNC_STRIDE + POSTED)
        if seq != last:
            return seq
        _spin_pause()
    _store_seq_cst(mail, w * SYNC_STRIDE + ASLEEP, 1)     # then look once more: a poster that
    seq = _load_seq_cst(mail, w * SYNC_STRIDE + POSTED)    # missed this flag has posted by now
    if seq != last:
        store_release(mail, w * SYNC_STRIDE + ASLEEP, 0)
        return seq
    return 0


@jit
def finish_job(mail, w, seq, turns):
    """Worker w has finished job seq: say so, then `await_job` the next."""
    store_release(mail, w * SYNC_STRIDE + DONE, seq)
    return await_job(mail, w, seq, turns)


@jit
def await_done(mail, workers, seq, sync):
    """Wait until workers 0..workers-1 have finished job seq, whose parts share sync."""
    store_release(sync, AWAITING, 1)
    for w in range(workers):
        spins = 0
        while load_acquire(mail, w * SYNC_STRIDE + DONE) != seq:
            spins = spin_turn(spins)
