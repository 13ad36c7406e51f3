"""Text generation end to end: a language model Embedding -> LSTM x n -> Dense on characters or words.

    train     read a corpus, build the vocabulary, train with stateful truncated BPTT and Adam,
              validate on the last 10% of the text, keep the best model (with its vocabulary)
    sample    prime the model with text and let it write, one streaming step per token
    evaluate  validation loss in nats per token, bits per character, perplexity

The Python functions below (build_model, fit_lm, evaluate_loss, Streamer, generate) are what the
command line and bench/textgen.py use; the `*_command` functions take the argparse namespace.
"""
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

from lstmkit.apps.sampling import check_sampling, sample_token
from lstmkit.data.text import TBPTTBatches, Vocabulary, eval_streams, space_between, train_val_split
from lstmkit.losses import log_softmax

# Defaults of `lstmkit textgen train` (the bench chooses its own, see bench/textgen.py).
DEFAULTS = dict(level="char", vocab=10000, layers=2, hidden=512, embed=64, dropout=0.2, seq_len=100,
                batch_size=64, lr=2e-3, schedule="cosine", clipnorm=5.0, weight_decay=0.0, minutes=10.0, steps=None,
                eval_every=None, eval_tokens=200_000, seed=0, impl="fast")
# Word level: 10000 outputs per position, so shorter windows and batches keep the logits small.
WORD_DEFAULTS = dict(seq_len=35, batch_size=32)
SCHEDULES = ("cosine", "step", "constant")
FORMAT = "lstmkit-textgen/1"


# ------------------------------------------------------------------------------------ the model

def build_model(vocab_size, layers=2, hidden=512, embed=64, dropout=0.0, seed=0, impl="fast"):
    """Sequential Embedding(V, embed) -> [LSTM(hidden, stateful) -> Dropout] x layers -> Dense(V),
    built for ids (batch, time); outputs logits (batch, time, V). Keras's initial weights, except
    the embedding (N(0, 1))."""
    from lstmkit.layers import LSTM, Dense, Dropout, Embedding
    from lstmkit.model import Sequential
    for name, value in (("--layers", layers), ("--hidden", hidden), ("--embed", embed)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value}")
    if not 0 <= dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {dropout}")
    stack = [Embedding(vocab_size, embed)]
    for _ in range(layers):
        stack.append(LSTM(hidden, return_sequences=True, stateful=True, impl=impl))
        if dropout > 0:
            stack.append(Dropout(dropout))
    stack.append(Dense(vocab_size))
    model = Sequential(stack, seed=seed)
    model.build((None,))
    # Embedding rows start N(0, 1) (torch's nn.Embedding) rather than Keras's U(-0.05, 0.05): with
    # inputs that small a char model sits on the unigram plateau for hundreds of steps.
    emb = model.layers[0].params["embeddings"]
    emb[...] = model.rng.standard_normal(emb.shape)
    return model


def lstm_layers(model):
    return [layer for layer in model.layers if type(layer).__name__ == "LSTM"]


def get_states(model):
    """The carried states of every stateful LSTM layer (list of [h, c] or None)."""
    return [None if layer.states is None else [s.copy() for s in layer.states] for layer in lstm_layers(model)]


def set_states(model, states):
    for layer, s in zip(lstm_layers(model), states):
        layer.reset_states(s)


def lr_at(base, schedule, progress):
    """The learning rate at progress in [0, 1] of training: cosine decay to 0, step (halved each
    quarter), or constant."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return base * 0.5 ** min(int(progress * 4), 3)
    if schedule == "constant":
        return base
    raise ValueError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")


def compile_model(model, lr, clipnorm, weight_decay=0.0):
    """Adam (torch's epsilon), or AdamW with decoupled weight decay on every parameter when
    weight_decay > 0; global-norm clipping at clipnorm (0 or None = off)."""
    from lstmkit.optim import Adam, AdamW
    kwargs = dict(learning_rate=lr, clipnorm=clipnorm or None, epsilon=1e-8)
    optimizer = AdamW(weight_decay=weight_decay, **kwargs) if weight_decay else Adam(**kwargs)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")


def evaluate_loss(model, ids, seq_len=100, batch_size=64):
    """Mean cross-entropy in nats per token of predicting ids[1:] from what precedes them, over the
    whole of ids (n,): batch_size contiguous streams read in windows of seq_len with the state
    carried (fewer streams for short texts, so that each has at least 1000 tokens of context).
    The model's own carried training states are restored afterwards."""
    ids = np.asarray(ids)
    x, y, w = eval_streams(ids, max(1, min(batch_size, len(ids) // 1000)))
    saved = get_states(model)
    set_states(model, [None] * len(saved))
    total = 0.0
    for s in range(0, x.shape[1], seq_len):
        logits = model(x[:, s:s + seq_len])
        logp = log_softmax(logits.astype(np.float64, copy=False))
        picked = np.take_along_axis(logp, y[:, s:s + seq_len, None].astype(np.int64), axis=-1)[..., 0]
        total -= float(np.sum(picked * w[:, s:s + seq_len]))
    set_states(model, saved)
    return total / float(w.sum())


def fit_lm(model, train_ids, val_ids, *, batch_size=64, seq_len=100, lr=2e-3, schedule="cosine",
           budget_s=None, steps=None, eval_every=None, eval_tokens=None, state=None,
           on_step=None, on_eval=None):
    """Train a compiled model (from build_model) on train_ids (n,) with stateful truncated BPTT.

    Stops after `steps` updates or `budget_s` seconds of training (the learning-rate schedule runs
    over whichever is given). Every `eval_every` steps (and at the end) the loss on val_ids (its
    first eval_tokens tokens, or all) is measured and on_eval(state) called. on_step(state) is
    called after every update. `state` (a dict from a previous call) resumes where that one
    stopped. Returns the state: step, epoch, window, elapsed (s), tokens, loss, val_loss, best_val.
    """
    if (budget_s is None) == (steps is None):
        raise ValueError("give a time budget (--minutes) or a number of steps (--steps), not both")
    if (budget_s is not None and budget_s <= 0) or (steps is not None and steps < 1):
        raise ValueError("the time budget and the number of steps must be positive")
    batches = TBPTTBatches(train_ids, batch_size, seq_len)
    state = {**dict(step=0, epoch=0, window=0, elapsed=0.0, tokens=0, loss=float("nan"), val_loss=None,
                    best_val=None), **(state or {})}
    val = val_ids if not eval_tokens else val_ids[:eval_tokens + 1]

    def evaluate():
        state["val_loss"] = evaluate_loss(model, val, seq_len)
        if state["best_val"] is None or state["val_loss"] < state["best_val"]:
            state["best_val"] = state["val_loss"]
        if on_eval:
            on_eval(state)

    last_eval = state["step"]
    start = time.perf_counter() - state["elapsed"]
    while True:
        progress = state["step"] / steps if steps else state["elapsed"] / budget_s
        if progress >= 1:
            break
        if state["window"] == 0:
            model.reset_states()
        model.optimizer.learning_rate = lr_at(lr, schedule, progress)
        x, y = batches.window(state["window"])
        state["loss"] = float(model.train_on_batch(x, y))
        state["step"] += 1
        state["tokens"] += x.size
        state["window"] += 1
        if state["window"] == len(batches):
            state["window"], state["epoch"] = 0, state["epoch"] + 1
        state["elapsed"] = time.perf_counter() - start
        if not math.isfinite(state["loss"]):
            raise ValueError(f"the training loss became {state['loss']} at step {state['step']}: "
                             "lower --lr or --clipnorm")
        if on_step:
            on_step(state)
        if eval_every and state["step"] - last_eval >= eval_every:
            evaluate()
            last_eval = state["step"]
            start = time.perf_counter() - state["elapsed"]   # evaluation time is not training time
    if eval_every is not None and last_eval != state["step"]:
        evaluate()
    return state


# ------------------------------------------------------------------------------------ sampling

class Streamer:
    """The model one token at a time with the streaming LSTM step: feed(id) -> logits (V,).

    Uses the weights of a model from build_model; keeps its own state (h, c per layer), batch 1.
    """

    def __init__(self, model):
        self.emb = model.layers[0].params["embeddings"]
        self.cells = [(layer.ops().lstm_step, layer.params["kernel"], layer.params["recurrent_kernel"],
                       layer.params["bias"]) for layer in lstm_layers(model)]
        dense = model.layers[-1]
        self.kernel, self.bias = dense.params["kernel"], dense.params["bias"]
        self.reset()

    def reset(self):
        self.states = [(np.zeros((1, U.shape[0]), U.dtype), np.zeros((1, U.shape[0]), U.dtype))
                       for _, _, U, _ in self.cells]

    def feed(self, token):
        x = self.emb[int(token):int(token) + 1]          # (1, E), a row slice (real strides)
        for k, (step, W, U, b) in enumerate(self.cells):
            h, c = step(x, *self.states[k], W, U, b)
            self.states[k] = (h, c)
            x = h
        return (x @ self.kernel + self.bias)[0]


def generate(model, vocab, prime="\n", length=500, temperature=0.8, top_k=0, top_p=1.0, seed=None):
    """Prime the model with `prime`, then yield `length` new tokens as text pieces, one at a time.

    Char level: unknown characters in prime are a ValueError. Word level: unknown words read as
    the unknown token. temperature 0 is greedy decoding.
    """
    check_sampling(temperature, top_k, top_p)
    if length < 0:
        raise ValueError(f"--length must be >= 0, got {length}")
    ids = vocab.encode(prime)
    if len(ids) == 0:
        raise ValueError("--prime must contain at least one token the model knows")
    rng = np.random.default_rng(seed)
    stream = Streamer(model)
    for t in ids[:-1]:
        stream.feed(t)
    token, prev = int(ids[-1]), vocab.tokens[int(ids[-1])]
    for _ in range(length):
        token = sample_token(stream.feed(token), rng, temperature, top_k, top_p)
        tok = vocab.tokens[token]
        if vocab.level == "word":
            prev, tok = tok, (" " if space_between(prev, tok) else "") + tok
        yield tok


# ------------------------------------------------------------------------------------ reports

def report(nats, vocab, n_chars=None, n_tokens=None):
    """Validation loss as nats per token, bits per character and (words) perplexity."""
    out = {"nats_per_token": nats}
    if vocab.level == "char":
        out["bits_per_char"] = nats / math.log(2)
    else:
        out["perplexity"] = math.exp(nats)
        if n_chars:
            out["bits_per_char"] = nats * n_tokens / n_chars / math.log(2)
    return out


def format_report(r):
    parts = [f"{r['nats_per_token']:.4f} nats/token"]
    if "bits_per_char" in r:
        parts.append(f"{r['bits_per_char']:.4f} bits/char")
    if "perplexity" in r:
        parts.append(f"perplexity {r['perplexity']:.1f}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------ apps

def load_corpus(source):
    from lstmkit.data.datasets import load_text
    return load_text(source)


def save_checkpoint(model, path, vocab, config, state):
    from lstmkit.checkpoint import save_model
    save_model(model, path, extra={"format": FORMAT, "vocab": vocab.to_dict(), "config": config,
                                   "state": {k: v for k, v in state.items() if k != "val_loss" or v is not None}})


def load_checkpoint(path):
    """(model, vocab, config, state) from a file written by `textgen train`."""
    from lstmkit.checkpoint import load_model
    if not Path(path).is_file():
        raise ValueError(f"no model file at {path}: train one with `lstmkit textgen train --out {path}`")
    model, extra = load_model(path)
    if not isinstance(extra, dict) or extra.get("format") != FORMAT:
        raise ValueError(f"{path} is not a text-generation model (made by `lstmkit textgen train`)")
    return model, Vocabulary.from_dict(extra["vocab"]), extra["config"], extra.get("state", {})


class Console:
    """Output of the apps: a rich progress line on a terminal, plain lines otherwise, nothing if quiet."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.live = not quiet and sys.stdout.isatty()
        self.progress = None

    def log(self, text):
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def start(self, total, unit):
        if not self.live:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, info="")
        self.unit = unit

    def update(self, completed, info):
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, info=info)

    def stop(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def train_config(args):
    """The settings given on the command line (those left out are None and take the defaults,
    or, with --resume, the saved run's values)."""
    given = {k: getattr(args, k, None) for k in DEFAULTS}
    given["text"] = getattr(args, "text", None)
    return given


def train(config, out, resume=False, console=None, sample_length=0):
    """Train per config (keys of DEFAULTS plus "text" and "force"; None or missing = default, or
    with resume the saved run's value; the architecture of a resumed model is always the saved one).
    Keeps the best model at `out`. Returns a summary dict."""
    console = console or Console(quiet=True)
    given = {k: v for k, v in config.items() if v is not None}
    if "steps" in given and "minutes" not in given:
        given["minutes"] = None
    state, saved = None, {}
    if resume:
        model, vocab, saved, state = load_checkpoint(out)
        for key in ("level", "vocab", "layers", "hidden", "embed", "dropout", "text", "impl"):
            given.pop(key, None)
        if given.get("minutes") is not None or given.get("steps") is not None:
            saved = {k: v for k, v in saved.items() if k not in ("minutes", "steps")}
    level = given.get("level", saved.get("level", DEFAULTS["level"]))
    config = {**DEFAULTS, **(WORD_DEFAULTS if level == "word" else {}), "text": "shakespeare", **saved, **given}
    if config["steps"] is not None and config["minutes"] is not None:   # --steps replaces the time budget
        config["minutes"] = None
    if config["schedule"] not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {SCHEDULES}, got {config['schedule']!r}")
    if config["level"] not in ("char", "word"):
        raise ValueError(f"--level must be char or word, got {config['level']!r}")
    if resume:
        state.pop("val_loss", None)
        console.log(f"resuming {out} at step {state['step']} (best validation loss {state.get('best_val')})")
    elif Path(out).exists() and not config.get("force"):
        raise ValueError(f"{out} exists: pass --resume to continue training it, --force to replace it, "
                         "or choose another --out")
    text = load_corpus(config["text"])
    if not resume:
        vocab = Vocabulary.build(text, config["level"], config["vocab"])
    ids = _encode_known(vocab, text)
    train_ids, val_ids = train_val_split(ids, 0.1)
    if not resume:
        model = build_model(vocab.size, config["layers"], config["hidden"], config["embed"], config["dropout"],
                            config["seed"], config["impl"])
    compile_model_keep_state(model, config, resume)
    budget = None if config["minutes"] is None else config["minutes"] * 60.0
    steps = config["steps"]
    if resume and state:
        # the new budget or step count adds to what was done
        if budget is not None:
            budget += state["elapsed"]
        else:
            steps += state["step"]
    eval_every = config["eval_every"] or _default_eval_every(config, len(train_ids))
    val_chars = len(text) - int(len(text) * 0.9)
    console.log(f"corpus {config['text']}: {len(text):,} characters, {len(ids):,} {vocab.level} tokens, "
                f"vocabulary {vocab.size}; {model.count_params():,} parameters; "
                f"validating on {min(len(val_ids), config['eval_tokens'] or len(val_ids)):,} tokens every {eval_every} steps")
    total = steps if steps else budget
    console.start(total, "steps" if steps else "s")
    t0 = time.perf_counter()

    def on_step(st):
        rate = st["tokens"] / max(st["elapsed"], 1e-9)
        if vocab.level == "word":
            rate *= val_chars / max(len(val_ids), 1)    # characters per word, roughly
        val = "-" if st["val_loss"] is None else f"{st['val_loss']:.4f}"
        console.update(st["step"] if steps else st["elapsed"],
                       f"step {st['step']}  loss {st['loss']:.4f}  val {val}  {rate:,.0f} chars/s")

    def on_eval(st):
        improved = st["val_loss"] <= st["best_val"]
        if improved:
            save_checkpoint(model, out, vocab, _plain(config), st)
        console.log(f"step {st['step']:>6}  epoch {st['epoch']}  train {st['loss']:.4f}  val {st['val_loss']:.4f}"
                    f"{'  saved' if improved else ''}  ({st['elapsed']:.0f}s)")

    try:
        state = fit_lm(model, train_ids, val_ids, batch_size=config["batch_size"], seq_len=config["seq_len"],
                       lr=config["lr"], schedule=config["schedule"], budget_s=budget, steps=steps,
                       eval_every=eval_every, eval_tokens=config["eval_tokens"], state=state,
                       on_step=on_step, on_eval=on_eval)
    finally:
        console.stop()
    best, vocab_, cfg_, best_state = load_checkpoint(out)
    nats = evaluate_loss(best, val_ids, config["seq_len"])
    summary = {"out": str(out), "steps": state["step"], "train_seconds": state["elapsed"],
               "wall_seconds": time.perf_counter() - t0, "chars_per_s": state["tokens"] / max(state["elapsed"], 1e-9),
               "best_step": best_state.get("step"), "val": report(nats, vocab, val_chars, len(val_ids))}
    console.log(f"best model (step {best_state.get('step')}) on the whole validation split: "
                f"{format_report(summary['val'])}")
    return summary


def _plain(config):
    return {k: v for k, v in config.items() if k != "force"}


def _default_eval_every(config, n_train):
    """About ten validations per run, at least every 50 steps."""
    if config["steps"]:
        return max(1, config["steps"] // 10)
    return 200


def _encode_known(vocab, text):
    """Ids of text; at char level, characters outside the vocabulary are dropped (words become UNK)."""
    missing = set(vocab.unknown(text)) if vocab.level == "char" else None
    if missing:
        text = "".join(ch for ch in text if ch not in missing)
    return vocab.encode(text)


def compile_model_keep_state(model, config, resume):
    """Compile with Adam; a resumed model keeps its optimizer moments if the checkpoint had them."""
    opt = getattr(model, "optimizer", None)
    if resume and opt is not None:
        opt.clipnorm = config["clipnorm"] or None
        return
    compile_model(model, config["lr"], config["clipnorm"], config.get("weight_decay", 0.0))


# ------------------------------------------------------------------------------------ commands

def train_command(args):
    config = train_config(args)
    config["force"] = getattr(args, "force", False)
    console = Console(args.quiet)
    summary = train(config, args.out, resume=args.resume, console=console)
    if args.sample_length:
        model, vocab, _, _ = load_checkpoint(args.out)
        console.log("sample (temperature 0.8):")
        write(generate(model, vocab, _default_prime(vocab), args.sample_length, 0.8, seed=config["seed"]))
    return 0 if summary else 1


def _default_prime(vocab):
    return "\n" if "\n" in vocab.index else vocab.tokens[-1]


def write(pieces, stream=None):
    """Print text pieces as they come."""
    stream = stream or sys.stdout
    for piece in pieces:
        stream.write(piece)
        stream.flush()
    stream.write("\n")
    stream.flush()


def sample_command(args):
    model, vocab, _, _ = load_checkpoint(args.model)
    prime = args.prime if args.prime is not None else _default_prime(vocab)
    prime = prime.replace("\\n", "\n")
    if vocab.level == "word":
        unknown = vocab.unknown(prime)
        if unknown and not args.quiet:
            print(f"note: words not in the vocabulary read as {vocab.tokens[vocab.unk_id]}: {', '.join(unknown[:10])}",
                  file=sys.stderr)
    pieces = generate(model, vocab, prime, args.length, args.temperature, args.top_k, args.top_p, args.seed)
    first = next(pieces, None)        # checks the arguments and the prime before printing anything
    sys.stdout.write(prime)
    write(itertools.chain([] if first is None else [first], pieces))
    return 0


def evaluate_command(args):
    model, vocab, config, state = load_checkpoint(args.model)
    source = args.text or config.get("text", "shakespeare")
    text = load_corpus(source)
    if args.text:
        val_text, what = text, f"{args.text} (all of it)"
    else:
        val_text, what = text[int(len(text) * 0.9):], f"the validation split of {source}"
    ids = _encode_known(vocab, val_text)
    if len(ids) < 2:
        raise ValueError("the text to evaluate is too short (fewer than two tokens)")
    nats = evaluate_loss(model, ids, config.get("seq_len", 100))
    r = report(nats, vocab, len(val_text), len(ids))
    print(f"{args.model} on {what} ({len(ids):,} tokens): {format_report(r)}")
    return 0


# Small enough to learn words and the play format in about three minutes on two cores.
DEMO = dict(level="char", vocab=10000, layers=2, hidden=256, embed=64, dropout=0.0, seq_len=100, batch_size=32,
            lr=3e-3, schedule="cosine", clipnorm=5.0, steps=None, eval_every=150, eval_tokens=50_000, impl="fast")


def demo_command(args):
    """`lstmkit demo`: train a char model on Shakespeare for --minutes, print samples at two
    temperatures, then run the default forecast (if the forecasting app is installed)."""
    from lstmkit.data.datasets import cache_dir
    console = Console(args.quiet)
    out = cache_dir() / "demo-char.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = dict(DEMO, minutes=args.minutes, seed=args.seed, text=str(args.text or "shakespeare"), force=True)
    console.log(f"Training a character-level LSTM language model on {config['text']} for {args.minutes:g} minutes "
                f"({config['layers']} x {config['hidden']} LSTM, model kept at {out}).")
    summary = train(config, out, console=console)
    model, vocab, _, _ = load_checkpoint(out)
    prime = "\n" if "\n" in vocab.index else vocab.tokens[0]
    for temperature in (0.5, 0.8):
        print(f"\n--- sample, temperature {temperature} ---", flush=True)
        write(generate(model, vocab, prime, args.length, temperature, seed=args.seed))
    print(f"\nValidation: {format_report(summary['val'])}; {summary['chars_per_s']:,.0f} characters/s.")
    forecast_demo = _forecast_demo()
    if forecast_demo is not None:
        print("\n--- forecasting ---", flush=True)
        forecast_demo(args)
    return 0


def _forecast_demo():
    """The forecasting app's default run (a function taking the argparse namespace), if it exists."""
    try:
        from lstmkit.apps import forecast
    except ImportError:
        return None
    return getattr(forecast, "demo_command", None)
