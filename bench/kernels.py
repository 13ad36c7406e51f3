"""lstmkit's compiled LSTM (or GRU, tanh RNN) against torch.nn.LSTM (GRU, RNN), side by side in one
process (DESIGN.md §5; its targets are the LSTM's).

Training step = forward + backward of the sum of the outputs (gradients of x and all weights);
inference = forward without gradients (the LSTM's with keep_cache=False, as a layer runs when not
training); streaming = 100 single steps at batch 1, H=256, carrying the state. Both sides run
float32 on the same thread count, alternating, medians of --reps repetitions after warm-up, each
timed call after 50 ms of untimed calls of the same side (see race). ratio = torch time / lstmkit
time (> 1: lstmkit is faster).

    python bench/kernels.py [--cell lstm|gru|rnn] [--threads 2] [--reps 7] [--json FILE] [--quick]
                            [--clock wall|thread]

--clock thread times the CPU time of the calling thread instead of the wall clock: with
--threads 1 every side computes on that thread, so the figures hold on a busy machine where
wall-clock medians do not (other processes sharing the cores inflate both sides unevenly).
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

SHAPES = [(1, 100, 128, 128), (16, 200, 64, 64), (32, 100, 256, 256), (64, 100, 512, 512),
          (128, 50, 1024, 1024)]
TARGETS = {  # (B, T, I, H): (train ratio, inference ratio), DESIGN.md §5
    (1, 100, 128, 128): (2.0, 2.0), (16, 200, 64, 64): (2.0, 2.0), (32, 100, 256, 256): (1.2, 1.0),
    (64, 100, 512, 512): (1.0, 1.0), (128, 50, 1024, 1024): (1.0, 1.0)}
STREAM_TARGET, MATMUL_FRACTION = 3.0, 0.85


CLOCK = time.perf_counter
SETTLE = 0.05   # seconds of untimed calls before each timed one (see race)


def timed(fn):
    t = CLOCK()
    fn()
    return CLOCK() - t


def race(ours, theirs, reps, warmup=2):
    """Median seconds of ours and theirs over reps repetitions, alternating sides (order swapped
    every repetition). Each timed call follows untimed calls of the same side for at least
    SETTLE seconds, so that it runs in its side's own steady state, as in a training loop:
    PyTorch's OpenMP threads spin for milliseconds after each call, and a timed lstmkit call
    straight after one would share its second core with that spin."""
    for _ in range(warmup):
        ours()
        theirs()
    a, b = [], []

    def settled(fn):
        start = CLOCK()
        fn()
        while CLOCK() - start < SETTLE:
            fn()
        return timed(fn)

    for k in range(reps):
        if k % 2:
            a.append(settled(ours))
            b.append(settled(theirs))
        else:
            b.append(settled(theirs))
            a.append(settled(ours))
    return float(np.median(a)), float(np.median(b))


def matmul_gflops(reps):
    """float32 2048x2048 @ 2048x2048: the best of NumPy's and torch's BLAS, median of reps."""
    import torch
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ta = torch.from_numpy(a)
    t_np, t_torch = race(lambda: a @ a, lambda: ta @ ta, reps)
    return 2 * n ** 3 / min(t_np, t_torch) / 1e9


class Cell:
    """The LSTM, GRU or tanh RNN on both sides: torch's module, its weights in lstmkit's layout,
    and lstmkit's compiled calls on them."""

    GATES = {"lstm": 4, "gru": 3, "rnn": 1}

    def __init__(self, name, torch):
        from lstmkit.kernels import kernel_ops
        self.name, self.torch, self.ops = name, torch, kernel_ops(name, "fast")
        self.gates = self.GATES[name]

    def module(self, I, H):
        self.torch.manual_seed(0)
        nn = self.torch.nn
        module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[self.name](I, H)
        W = module.weight_ih_l0.detach().numpy().T.copy()
        U = module.weight_hh_l0.detach().numpy().T.copy()
        b_ih, b_hh = module.bias_ih_l0.detach().numpy(), module.bias_hh_l0.detach().numpy()
        return module, (W, U, np.stack([b_ih, b_hh]) if self.name == "gru" else b_ih + b_hh)

    def forward(self, x, weights, keep_cache=True):
        flag = {"keep_cache": keep_cache} if self.name == "lstm" else {}   # (the GRU and RNN always keep it)
        return getattr(self.ops, f"{self.name}_forward")(x, *weights, **flag)

    def train(self, x, weights):
        y, _, cache = self.forward(x, weights)
        no_state_grads = (None, None) if self.name == "lstm" else (None,)
        getattr(self.ops, f"{self.name}_backward")(np.ones_like(y), *no_state_grads, cache)

    def stream(self, xs, weights):
        H = weights[1].shape[0]
        h = c = np.zeros((1, H), np.float32)
        for x in xs:
            if self.name == "lstm":
                h, c = self.ops.lstm_step(x, h, c, *weights)
            else:
                h = getattr(self.ops, f"{self.name}_step")(x, h, *weights)


def bench_shape(B, T, I, H, reps, cell, torch):
    module, weights = cell.module(I, H)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    xt = torch.from_numpy(x)

    def torch_train():
        for p in module.parameters():
            p.grad = None
        xg = xt.clone().requires_grad_()
        y, _ = module(xg)
        y.sum().backward()

    def torch_infer():
        with torch.no_grad():
            module(xt)

    ours_tr, torch_tr = race(lambda: cell.train(x, weights), torch_train, reps)
    ours_inf, torch_inf = race(lambda: cell.forward(x, weights, keep_cache=False), torch_infer, reps)
    flops = 3 * 2 * T * B * (I + H) * cell.gates * H   # forward 2 gemm-FLOPs per weight per row, backward 2x
    return dict(B=B, T=T, I=I, H=H, train_ratio=torch_tr / ours_tr, infer_ratio=torch_inf / ours_inf,
                train_gflops=flops / ours_tr / 1e9, torch_train_ms=torch_tr * 1e3,
                train_ms=ours_tr * 1e3, torch_infer_ms=torch_inf * 1e3, infer_ms=ours_inf * 1e3)


def bench_stream(reps, cell, torch, H=256, steps=100):
    module, weights = cell.module(H, H)
    xs = np.random.default_rng(0).standard_normal((steps, 1, H)).astype(np.float32)
    xts = torch.from_numpy(xs[:, None])   # (steps, 1, 1, H): one (T=1, B=1, I) input per step

    def theirs():
        state = None
        with torch.no_grad():
            for t in range(steps):
                _, state = module(xts[t], state)

    t_ours, t_torch = race(lambda: cell.stream(xs, weights), theirs, reps)
    return t_torch / t_ours, t_ours / steps * 1e6, t_torch / steps * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per case (>= 5)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--quick", action="store_true", help="skip the largest shape")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm",
                   help="the cell to compare (default lstm; DESIGN.md's targets are the LSTM's)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="wall clock (default) or CPU time of this thread (only with --threads 1)")
    args = p.parse_args(argv)
    if args.reps < 5:
        p.error("--reps must be at least 5")
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread measures one thread: use it with --threads 1")
    global CLOCK
    CLOCK = time.thread_time if args.clock == "thread" else time.perf_counter
    os.environ["LSTMKIT_NUM_THREADS"] = str(args.threads)
    import torch
    import lstmkit
    torch.set_num_threads(args.threads)
    lstmkit.set_num_threads(args.threads)
    cell = Cell(args.cell, torch)
    targets = args.cell == "lstm"

    gflops = matmul_gflops(args.reps)
    print(f"lstmkit vs torch {torch.__version__} (oneDNN), {args.cell.upper()}, float32, {args.threads} threads, {args.clock} clock, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"matmul 2048^3 float32: {gflops:.0f} GFLOP/s (best of NumPy and torch)\n")
    head = f"{'B':>4} {'T':>4} {'I':>5} {'H':>5} | {'train ms':>9} {'torch':>9} {'ratio':>6} {'GF/s':>5} | " \
           f"{'infer ms':>9} {'torch':>9} {'ratio':>6}" + (" | targets" if targets else "")
    print(head)
    print("-" * len(head))
    rows, ok = [], True
    shapes = SHAPES[:-1] if args.quick else SHAPES
    for B, T, I, H in shapes:
        reps = args.reps if H < 1024 else max(5, args.reps - 2)
        r = bench_shape(B, T, I, H, reps, cell, torch)
        rows.append(r)
        tt, ti = TARGETS[(B, T, I, H)] if targets else (0, 0)
        good = r["train_ratio"] >= tt and r["infer_ratio"] >= ti
        note = f"train>={tt} infer>={ti} {'ok' if good else 'MISSED'}" if targets else ""
        if targets and (B, T, I, H) == SHAPES[-1]:
            frac = r["train_gflops"] / gflops
            good_gf = frac >= MATMUL_FRACTION
            note += f"; {frac:.0%} of matmul {'ok' if good_gf else 'MISSED'}"
            good = good and good_gf
        ok = ok and good
        print(f"{B:>4} {T:>4} {I:>5} {H:>5} | {r['train_ms']:>9.2f} {r['torch_train_ms']:>9.2f} "
              f"{r['train_ratio']:>6.2f} {r['train_gflops']:>5.0f} | {r['infer_ms']:>9.2f} "
              f"{r['torch_infer_ms']:>9.2f} {r['infer_ratio']:>6.2f}" + (f" | {note}" if targets else ""), flush=True)
    stream, us, torch_us = bench_stream(args.reps, cell, torch)
    print(f"\nstreaming, batch 1, H=256: {us:.1f} us/step, torch {torch_us:.1f} us/step, ratio {stream:.1f}"
          + (f" (target >= {STREAM_TARGET}) {'ok' if stream >= STREAM_TARGET else 'MISSED'}" if targets else ""))
    if targets:
        ok = ok and stream >= STREAM_TARGET
        print("all targets met" if ok else "some targets missed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cell": args.cell, "matmul_gflops": gflops, "threads": args.threads, "clock": args.clock,
                       "shapes": rows, "stream_ratio": stream}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
