"""One LSTM step traced gate by gate: every value the equations produce, for a small example.

By default, the source articles' worked example: x_t = [0.1, 0.2, 0.3, 0.4], h_{t-1} = [0.5, 0.6,
0.7, 0.8], and for every gate k the same 4 x 4 weights, written as the articles write them (the
gate is sigmoid(W_k x_t + U_k h_{t-1} + b_k), W_k and U_k (H, I) and (H, H)):

    W_k rows [0.4 0.5 0.6 0.7] + 0.1 r,   U_k rows [0.3 0.4 0.5 0.6] + 0.1 r,   b_k = [0.1 0.2 0.3 0.4]

The articles stop before the numbers and never give C_{t-1}; here it is zero unless given.
The values come from the reference cell (`lstmkit.cells.lstm`), so the trace is the model's own
arithmetic, not a second copy of it.
"""
import numpy as np

from lstmkit.cells.lstm import lstm_forward

GATES = (  # (block, name, symbol, the articles' subscript, nonlinearity) in the order of the 4H axis
    (0, "input gate", "i_t", "i", "sigmoid"),
    (1, "forget gate", "f_t", "f", "sigmoid"),
    (2, "candidate", "C~_t", "c", "tanh"),
    (3, "output gate", "o_t", "o", "sigmoid"),
)


def article_example():
    """The articles' worked example: x (4,), h (4,), and per gate W_k, U_k (4, 4), b_k (4,)."""
    r = 0.1 * np.arange(4)[:, None]
    W_k = np.array([0.4, 0.5, 0.6, 0.7]) + r
    U_k = np.array([0.3, 0.4, 0.5, 0.6]) + r
    b_k = np.array([0.1, 0.2, 0.3, 0.4])
    return np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.7, 0.8]), [W_k] * 4, [U_k] * 4, [b_k] * 4


def stack_gates(W_gates, U_gates, b_gates):
    """lstmkit's W (I, 4H), U (H, 4H), b (4H,) from per-gate weights in the articles' (and
    PyTorch's) orientation, W_k (H, I) and U_k (H, H), and biases b_k (H,), gates in the order
    i, f, g (C~), o."""
    return np.vstack(W_gates).T, np.vstack(U_gates).T, np.concatenate(b_gates)


def trace_step(x, h, c, W, U, b):
    """Every value of one step for one sequence: x (I,), h = h_{t-1} and c = C_{t-1} (H,), W
    (I, 4H), U (H, 4H), b (4H,). Returns a dict: for each gate symbol, its terms ("x W", "h U",
    "b"), their sum "z" and its value; then "C_t", "tanh(C_t)" and "h_t" (each (H,))."""
    x, h, c = (np.asarray(v, np.float64) for v in (x, h, c))
    W, U, b = (np.asarray(v, np.float64) for v in (W, U, b))
    H = U.shape[0]
    _, (h_new, c_new), cache = lstm_forward(x[None, None], W, U, b, h[None], c[None])
    xw, hu = x @ W, h @ U
    trace = {}
    for k, _, symbol, _, _ in GATES:
        part = slice(k * H, (k + 1) * H)
        trace[symbol] = {"x W": xw[part], "h U": hu[part], "b": b[part], "z": xw[part] + hu[part] + b[part],
                         "value": cache["gates"][0, 0, part]}
    trace["C_t"], trace["tanh(C_t)"], trace["h_t"] = c_new[0], cache["tanh_c"][0, 0], h_new[0]
    return trace


def format_trace(x, h, c, trace, title):
    """The trace as text, one line per value, each beside its equation."""
    vec = lambda v: "[" + " ".join(f"{e:8.5f}" for e in v) + "]"
    row = lambda label, v: f"    {label:<13}= {vec(v)}"
    lines = [title, "", row("x_t", x), row("h_{t-1}", h), row("C_{t-1}", c), ""]
    for k, name, symbol, s, fn in GATES:
        g = trace[symbol]
        lines += [f"{name}: {symbol} = {fn}(W_{s} x_t + U_{s} h_{{t-1}} + b_{s})",
                  row(f"W_{s} x_t", g["x W"]), row(f"U_{s} h_{{t-1}}", g["h U"]), row(f"b_{s}", g["b"]),
                  row("sum", g["z"]), row(symbol, g["value"]), ""]
    lines += ["cell state: C_t = f_t * C_{t-1} + i_t * C~_t", row("C_t", trace["C_t"]),
              "hidden state: h_t = o_t * tanh(C_t)", row("tanh(C_t)", trace["tanh(C_t)"]),
              row("h_t", trace["h_t"])]
    return "\n".join(lines)


def _vector(text, name, size):
    """A comma-separated vector of `size` numbers from the command line."""
    try:
        v = np.array([float(e) for e in text.split(",")])
    except ValueError:
        raise ValueError(f"--{name} must be {size} comma-separated numbers, got {text!r}") from None
    if v.shape != (size,) or not np.all(np.isfinite(v)):
        raise ValueError(f"--{name} must be {size} comma-separated finite numbers, got {text!r}")
    return v


def run(args):
    """`lstmkit explain`: the articles' worked example, or its weights with other x, h or C."""
    x, h, W_gates, U_gates, b_gates = article_example()
    c = np.zeros(4)
    x = _vector(args.x, "x", 4) if args.x else x
    h = _vector(args.h, "h", 4) if args.h else h
    c = _vector(args.c, "c", 4) if args.c else c
    trace = trace_step(x, h, c, *stack_gates(W_gates, U_gates, b_gates))
    title = ("One LSTM step with the articles' worked example: the same 4 x 4 weights for every gate "
             "(W_k rows 0.4-0.7 + 0.1 r, U_k rows 0.3-0.6 + 0.1 r, b_k = 0.1-0.4)"
             + ("" if args.c else "; C_{t-1} = 0, which the example leaves out") + ".")
    print(format_trace(x, h, c, trace, title))
