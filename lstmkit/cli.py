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
