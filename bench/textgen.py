"""Char-level language model on tinyshakespeare: lstmkit against a plain PyTorch LSTM, same budget.

    python bench/textgen.py --minutes 10 --json bench/results/textgen.json

Data as nanoGPT's shakespeare_char: the first 90% of ../shared/data/tinyshakespeare.txt trains,
the last 10% validates, 65-character vocabulary. Each side trains for the same wall-clock budget
(in its own process, one after the other) with the same architecture, the same initial weights
(lstmkit's Keras-style initialisation, copied into torch), the same data order (stateful
truncated BPTT), Adam with the same settings, global-norm clipping and a cosine learning-rate
schedule over the budget. Then each reports the mean cross-entropy over the whole validation
split (nats/char) and its training throughput (characters/s). The split is read as one stream by
default (--eval-batch 1: every character predicted from all the validation text before it), and
also as 64 parallel streams that each start from a zero state, as a fast evaluation would.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
# 2 x 256, batch 32, dropout 0.2: about 13 passes over the text fit in 10 minutes on 2 cores, and the
# dropout holds back the memorising that sets in after about 8 (see the README).
CONFIG = dict(layers=2, hidden=256, embed=64, dropout=0.2, seq_len=100, batch_size=32, lr=3e-3,
              clipnorm=5.0, weight_decay=0.0, schedule="cosine", seed=0, threads=2, eval_batch=1)


def load_data(path):
    """(train_ids, val_ids, vocab) as nanoGPT: sorted characters of the whole text, 90/10 split."""
    from lstmkit.data.text import Vocabulary, train_val_split
    text = Path(path).read_text(encoding="utf-8")
    vocab = Vocabulary.build(text, "char")
    train, val = train_val_split(vocab.encode(text), 0.1)
    return train, val, vocab


def eval_stream_counts(cfg):
    """The validation split is read as this many parallel streams (1: every character predicted
    from all the validation text before it; n: n streams each starting from a zero state)."""
    return sorted({1, 64, cfg["eval_batch"]})


def initial_model(vocab_size, cfg):
    """The lstmkit model with its initial weights (both sides start from these)."""
    from lstmkit.apps.textgen import build_model
    return build_model(vocab_size, cfg["layers"], cfg["hidden"], cfg["embed"], cfg["dropout"], cfg["seed"], "fast")


def run_lstmkit(cfg, budget_s, train, val, vocab):
    from lstmkit.apps.textgen import compile_model, evaluate_loss, fit_lm, generate
    from lstmkit.kernels import threads
    threads.set_num_threads(cfg["threads"])
    warm = initial_model(vocab.size, dict(cfg, hidden=8, layers=1))   # compile the kernels outside the budget
    compile_model(warm, cfg["lr"], cfg["clipnorm"], cfg["weight_decay"])
    warm.train_on_batch(train[None, :cfg["seq_len"]], train[None, 1:cfg["seq_len"] + 1])
    model = initial_model(vocab.size, cfg)
    compile_model(model, cfg["lr"], cfg["clipnorm"], cfg["weight_decay"])
    state = fit_lm(model, train, val, batch_size=cfg["batch_size"], seq_len=cfg["seq_len"], lr=cfg["lr"],
                   schedule=cfg["schedule"], budget_s=budget_s)
    t0 = time.perf_counter()
    by_streams = {n: evaluate_loss(model, val, cfg["seq_len"], n) for n in eval_stream_counts(cfg)}
    eval_s = time.perf_counter() - t0
    sample = "".join(generate(model, vocab, "\n", 600, temperature=0.8, seed=cfg["seed"]))
    return {"val_loss": by_streams[cfg["eval_batch"]], "val_loss_by_streams": by_streams,
            "chars_per_s": state["tokens"] / state["elapsed"], "params": model.count_params(),
            "steps": state["step"], "epochs": state["tokens"] / len(train), "train_s": state["elapsed"],
            "eval_s": eval_s, "sample": sample}


def run_torch(cfg, budget_s, train, val, vocab):
    import torch
    import torch.nn as nn
    from lstmkit.apps.textgen import lr_at
    from lstmkit.data.text import TBPTTBatches, eval_streams
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    V, H, L = vocab.size, cfg["hidden"], cfg["layers"]

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, cfg["embed"])
            self.lstm = nn.LSTM(cfg["embed"], H, L, batch_first=True, dropout=cfg["dropout"] if L > 1 else 0.0)
            self.drop = nn.Dropout(cfg["dropout"])
            self.fc = nn.Linear(H, V)

        def forward(self, x, state):
            y, state = self.lstm(self.embed(x), state)
            return self.fc(self.drop(y)), state

    net = CharLSTM()
    init = initial_model(V, cfg)            # same starting weights as the lstmkit side
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in init.trainable_params().items()}
    lstm_names = [l.name for l in init.layers if type(l).__name__ == "LSTM"]
    with torch.no_grad():
        net.embed.weight.copy_(p["embedding/embeddings"])
        for k, name in enumerate(lstm_names):
            getattr(net.lstm, f"weight_ih_l{k}").copy_(p[f"{name}/kernel"].T)
            getattr(net.lstm, f"weight_hh_l{k}").copy_(p[f"{name}/recurrent_kernel"].T)
            getattr(net.lstm, f"bias_ih_l{k}").copy_(p[f"{name}/bias"])
            getattr(net.lstm, f"bias_hh_l{k}").zero_()
        dense = init.layers[-1].name
        net.fc.weight.copy_(p[f"{dense}/kernel"].T)
        net.fc.bias.copy_(p[f"{dense}/bias"])
    params = sum(t.numel() for t in net.parameters()) - sum(
        getattr(net.lstm, f"bias_hh_l{k}").numel() for k in range(L))   # lstmkit has one bias per layer
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=cfg["weight_decay"])   # weight_decay 0: exactly Adam
    batches = TBPTTBatches(train, cfg["batch_size"], cfg["seq_len"])
    xs, ys = torch.from_numpy(batches.x.astype(np.int64)), torch.from_numpy(batches.y.astype(np.int64))
    T = cfg["seq_len"]
    net.train()
    state, window, step, tokens = None, 0, 0, 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < budget_s:
        if window == 0:
            state = None
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg["lr"], cfg["schedule"], elapsed / budget_s)
        x, y = xs[:, window * T:(window + 1) * T], ys[:, window * T:(window + 1) * T]
        logits, state = net(x, state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["clipnorm"]:
            nn.utils.clip_grad_norm_(net.parameters(), cfg["clipnorm"])
        opt.step()
        step += 1
        tokens += x.numel()
        window = (window + 1) % len(batches)
        elapsed = time.perf_counter() - start
    t0 = time.perf_counter()
    net.eval()

    def evaluate(streams):
        ex, ey, ew = eval_streams(val, streams)
        total, state = 0.0, None
        with torch.no_grad():
            for s in range(0, ex.shape[1], T):
                logits, state = net(torch.from_numpy(ex[:, s:s + T].astype(np.int64)), state)
                nll = nn.functional.cross_entropy(logits.reshape(-1, V).double(),
                                                  torch.from_numpy(ey[:, s:s + T].astype(np.int64)).reshape(-1),
                                                  reduction="none")
                total += float((nll * torch.from_numpy(ew[:, s:s + T].astype(np.float64)).reshape(-1)).sum())
        return total / float(ew.sum())

    by_streams = {n: evaluate(n) for n in eval_stream_counts(cfg)}
    return {"val_loss": by_streams[cfg["eval_batch"]], "val_loss_by_streams": by_streams,
            "chars_per_s": tokens / elapsed, "params": int(params), "steps": step, "epochs": tokens / len(train),
            "train_s": elapsed, "eval_s": time.perf_counter() - t0, "torch_version": torch.__version__}


def side_main(args):
    """Run one side in this process and write its result as JSON to args.result."""
    cfg = json.loads(args.config)
    train, val, vocab = load_data(args.data)
    fn = run_lstmkit if args.side == "lstmkit" else run_torch
    result = fn(cfg, args.minutes * 60.0, train, val, vocab)
    Path(args.result).write_text(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per side (default: %(default)s)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--data", default=str(DATA), help="tinyshakespeare.txt (default: %(default)s)")
    ap.add_argument("--only", choices=("lstmkit", "torch"), help="run one side only")
    for key, value in CONFIG.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--side", choices=("lstmkit", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return side_main(args)
    if not Path(args.data).is_file():
        raise SystemExit(f"no data at {args.data}")
    cfg = {k: getattr(args, k) for k in CONFIG}
    out = {"budget_s": args.minutes * 60.0, "config": cfg, "data": os.path.basename(args.data),
           "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}}
    sides = [args.only] if args.only else ["lstmkit", "torch"]
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]),
               OPENBLAS_NUM_THREADS=str(cfg["threads"]))
    for side in sides:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result = f.name
        load = os.getloadavg()[0]
        print(f"{side}: training for {args.minutes:g} min (load {load:.2f}) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--side", side, "--config", json.dumps(cfg), "--result", result,
                        "--minutes", str(args.minutes), "--data", args.data], check=True, env=env)
        out[side] = json.loads(Path(result).read_text())
        out[side]["load_during"] = round(os.getloadavg()[0], 2)
        os.unlink(result)
        r = out[side]
        others = ", ".join(f"{v:.4f} with {n} streams" for n, v in r["val_loss_by_streams"].items()
                           if int(n) != cfg["eval_batch"])
        print(f"{side}: val loss {r['val_loss']:.4f} nats/char ({r['val_loss'] / math.log(2):.3f} bits/char; {others}), "
              f"{r['chars_per_s']:,.0f} chars/s, {r['steps']} steps, {r['epochs']:.2f} epochs, "
              f"{r['params']:,} parameters", flush=True)
    out["machine"]["load_after"] = os.getloadavg()[0]
    if "lstmkit" in out:
        print("\nlstmkit sample (temperature 0.8):\n" + out["lstmkit"]["sample"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
