"""The LSTM step in registers, for small float32 layers: 4 batch rows by 16 units' four gates.

    z     = b + x_t W + h_{t-1} U        16 AVX-512 accumulators (4 rows x gates i, f, g, o)
    i, f, o = sigmoid(z_i, z_f, z_o), g = tanh(z_g) = 2 sigmoid(2 z_g) - 1
    C_t   = f C_{t-1} + i g,  h_t = o tanh(C_t)

`lstm_tile` does all of it before anything leaves the registers: no x W projected beforehand, no
pre-activations written and read back, one pass instead of four over each row. At 16, 200, 64,
64 on two threads (alternating runs): inference 1.19-1.39 -> 0.91-1.06 ms, the training forward
1.34-1.47 -> 1.12-1.14; one thread on 8 rows, inference 1.02-1.05 -> 0.76-0.89. Each weight
matrix is packed by unit groups (`pack_by_units`) so that the four gates of 16 units are 64
contiguous values a row.

The exp and the reciprocal are those of `core` (`vexp` and its EXP32_* constants, `vrecip`:
Cody-Waite reduction, a degree-7 polynomial, a division),
written here on vectors.
Where the step runs this way, training and inference both use it, so that their numbers agree bit
for bit.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from lstmkit.kernels.core import (EXP32_CLAMP, EXP32_LN2_HI, EXP32_LN2_LO, EXP32_LOG2E, EXP32_TAYLOR, EXP_ROUND, jit,
                                  make_copy, register_sums)

ROWS, UNITS = 4, 16          # batch rows and units per tile: 16 accumulators of 16 float32
WIDTH = 4 * UNITS            # values of a packed row: i, f, g, o of 16 units


_copy_units = make_copy(UNITS)


@jit
def pack_by_units(M, packed):
    """Lay M (K, 4H) out as packed (H/16, K, 64): packed[u, k, 16 g + j] = M[k, g H + 16 u + j]
    (both C-contiguous), 16 values at a time (`core.make_copy`: a loop over j did not vectorise;
    one core, 64 x 256: 2.0 against 4.0 µs)."""
    K, G = M.shape
    H = G // 4
    for u in range(H // UNITS):
        for k in range(K):
            for g in range(4):
                _copy_units(M, k * G + g * H + u * UNITS, packed, (u * K + k) * WIDTH + g * UNITS)


@intrinsic
def lstm_tile(typingctx, x, x_off, I, Wu, h, h_off, Uu, group, H, b, cs, cp_off, cn_off, hn, hn_off,
              y, y_off, keep, gates, g_off, th, th_off):
    """One step of 4 rows (r < 4) and the 16 units of a unit group (j < 16: unit 16 group + j),
    on flat element offsets into the arrays' data (every row of x, h, cs, hn, y and th is `I` or
    `H` values after the one before; rows of gates 4H):

        x_t:     x.data[x_off + r I + k]        W packed: Wu[group, k, 16 g + j]
        h_{t-1}: h.data[h_off + r H + k]        U packed: Uu[group, k, 16 g + j]
        b:       b[g H + 16 group + j]
        C_{t-1}: cs.data[cp_off + r H + j]  ->  C_t: cs.data[cn_off + r H + j]
        h_t:     hn.data[hn_off + r H + j]

    Where keep is true (a forward that keeps its cache), also h_t at y.data[y_off + r H + j] and
    what BPTT needs: i, f, (g+1)/2, o at gates.data[g_off + r 4H + g H + j] and tanh(C_t) at
    th.data[th_off + r H + j]."""
    dtype = types.float32
    if any(getattr(a, "dtype", None) != dtype for a in (x, Wu, h, Uu, b, cs, hn, y, gates, th)):
        return None
    sig = types.void(x, x_off, I, Wu, h, h_off, Uu, group, H, b, cs, cp_off, cn_off, hn, hn_off, y, y_off,
                     keep, gates, g_off, th, th_off)

    def codegen(context, builder, signature, args):
        for attr in ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"',
                     '"reciprocal-estimates"="!vec-divf,!divf"'):
            set.add(builder.function.attributes, attr)
        tys = signature.args
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        vec, ivec = ir.VectorType(f32, UNITS), ir.VectorType(i32, UNITS)
        vptr = vec.as_pointer()
        const = lambda v: ir.Constant(i64, v)
        splat = lambda v: ir.Constant(vec, [ir.Constant(f32, v)] * UNITS)
        data = lambda i: context.make_array(tys[i])(context, builder, args[i]).data
        num = lambda i: context.cast(builder, args[i], tys[i], types.int64)
        X, WU, Hh, UU, Bb, CS, HN, Y, GATES, TH = (data(i) for i in (0, 3, 4, 6, 9, 10, 13, 15, 18, 20))
        x_off, I, h_off, group, H, cp_off, cn_off, hn_off, y_off, g_off, th_off = (
            num(i) for i in (1, 2, 5, 7, 8, 11, 12, 14, 16, 19, 21))
        keep = builder.icmp_signed("!=", num(17), const(0))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                             "llvm.fma.v16f32")
        fast = ("contract", "nsz", "arcp", "afn")
        at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vptr)
        load = lambda base, off: builder.load(at(base, off), align=4)
        row = lambda off, r, stride: builder.add(off, builder.mul(const(r), stride))

        def vexp(v):
            """core.vexp on a vector, with its constants: clamp, k = round(v / ln 2) (in the low bits of
            t), r = v - k ln 2, p(r) 2^k."""
            lo, hi = EXP32_CLAMP
            v = builder.select(builder.fcmp_ordered("<", v, splat(lo)), splat(lo), v)
            v = builder.select(builder.fcmp_ordered(">", v, splat(hi)), splat(hi), v)
            t = builder.fadd(builder.fmul(v, splat(EXP32_LOG2E), flags=fast), splat(EXP_ROUND), flags=fast)
            k = builder.fsub(t, splat(EXP_ROUND))
            r = builder.fadd(builder.fsub(v, builder.fmul(k, splat(EXP32_LN2_HI), flags=fast), flags=fast),
                             builder.fmul(k, splat(EXP32_LN2_LO), flags=fast), flags=fast)
            p = splat(EXP32_TAYLOR[0])
            for c in EXP32_TAYLOR[1:]:
                p = builder.fadd(builder.fmul(p, r, flags=fast), splat(c), flags=fast)
            bits = builder.shl(builder.bitcast(t, ivec), ir.Constant(ivec, [ir.Constant(i32, 23)] * UNITS))
            return builder.fmul(p, builder.bitcast(bits, vec), flags=fast)

        def sigmoid(v):
            """core.vsigmoid: 1 / (1 + exp(-v)), by division (no estimate: see core.vrecip)."""
            e = vexp(builder.fsub(splat(-0.0), v, flags=fast))
            return builder.fdiv(splat(1.0), builder.fadd(splat(1.0), e, flags=fast),
                                flags=("arcp", "afn", "ninf", "nsz", "contract"))

        def products(A, a_off, a_rs, P, p_off, K, sums, name):
            """sums[r][g] + sum over k < K of A[r, k] P[k, 16 g:16 g + 16], in registers."""
            arows = [builder.gep(A, [row(a_off, r, a_rs)]) for r in range(ROWS)]
            p_row = lambda k: builder.gep(P, [builder.add(p_off, builder.mul(k, const(WIDTH)))])
            return register_sums(builder, fma, vec, arows, const(1), p_row, sums, const(0), K, name)

        b_off = builder.mul(group, const(UNITS))
        bias = [load(Bb, builder.add(b_off, builder.mul(const(g), H))) for g in range(4)]
        panel = lambda K: builder.mul(builder.mul(group, K), const(WIDTH))     # the group's packed rows
        z = products(X, x_off, I, WU, panel(I), I, [bias] * ROWS, "xw")
        z = products(Hh, h_off, H, UU, panel(H), H, z, "hu")
        two, one = splat(2.0), splat(1.0)
        four_h = builder.mul(const(4), H)
        for r in range(ROWS):
            i, f, gs, o = (sigmoid(z[r][0]), sigmoid(z[r][1]), sigmoid(builder.fmul(two, z[r][2], flags=fast)),
                           sigmoid(z[r][3]))
            g = builder.fsub(builder.fmul(two, gs, flags=fast), one, flags=fast)
            c = builder.fadd(builder.fmul(f, load(CS, row(cp_off, r, H)), flags=fast), builder.fmul(i, g, flags=fast),
                             flags=fast)
            tc = builder.fsub(builder.fmul(two, sigmoid(builder.fmul(two, c, flags=fast)), flags=fast), one, flags=fast)
            h_t = builder.fmul(o, tc, flags=fast)
            builder.store(c, at(CS, row(cn_off, r, H)), align=4)
            builder.store(h_t, at(HN, row(hn_off, r, H)), align=4)
            with builder.if_then(keep):
                builder.store(h_t, at(Y, row(y_off, r, H)), align=4)
                base = row(g_off, r, four_h)
                for k, v in enumerate((i, f, gs, o)):
                    builder.store(v, at(GATES, builder.add(base, builder.mul(const(k), H))), align=4)
                builder.store(tc, at(TH, row(th_off, r, H)), align=4)
        return context.get_dummy_value()

    return sig, codegen
