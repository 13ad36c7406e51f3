"""Backtest table for the forecasting app: default settings, --backtest 5, four real series.

    python bench/forecast.py [--datasets co2,sunspots] [--backtest 5] [--out bench/results/forecast.json]

For each data set it runs `lstmkit.apps.forecast.forecast` with default settings (no tuning per
data set), prints MASE and sMAPE per method averaged over the origins, checks the issue's targets
and writes everything to a JSON file.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lstmkit.apps.forecast import forecast  # noqa: E402

METHODS = ("lstm", "naive", "seasonal_naive", "drift", "ets")


def targets(name, m):
    """The issue's targets: {description: held?} for one data set's averaged metrics m."""
    mase = {k: v["MASE"] for k, v in m.items()}
    best = min(mase[k] for k in METHODS[1:])
    if name in ("co2", "airpassengers"):
        return {"MASE below seasonal naive": mase["lstm"] < mase["seasonal_naive"],
                "MASE within 10% of the best baseline": mase["lstm"] <= 1.10 * best,
                "MASE below the best baseline": mase["lstm"] < best}
    if name == "sunspots":
        best_simple = min(mase["naive"], mase["drift"], mase["ets"])
        return {"MASE below the best of naive, drift, ETS": mase["lstm"] < best_simple}
    if name == "msft":
        return {"sMAPE at most 5% above naive": m["lstm"]["sMAPE"] <= 1.05 * m["naive"]["sMAPE"]}
    return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="co2,airpassengers,sunspots,msft")
    ap.add_argument("--backtest", type=int, default=5)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "results", "forecast.json"))
    args = ap.parse_args()
    results = {}
    for name in args.datasets.split(","):
        t0 = time.time()
        r = forecast(dataset=name, backtest=args.backtest)["summary"]
        m = r["methods"]
        results[name] = {"methods": m, "best_baseline": r["best_baseline"], "anchor": r["anchor"],
                         "settings": r["settings"], "origins": r["origins"], "per_origin": r["per_origin"],
                         "targets": targets(name, m), "seconds": round(time.time() - t0, 1)}
        print(f"{name}: " + ", ".join(f"{k} MASE {m[k]['MASE']:.3f} sMAPE {m[k]['sMAPE']:.2f}" for k in METHODS)
              + f"; coverage80 {m['lstm']['coverage80']:.2f} coverage95 {m['lstm']['coverage95']:.2f}; "
              f"{results[name]['targets']} ({time.time() - t0:.0f} s)", flush=True)
    print()
    print("| data set | metric | LSTM | naive | seasonal naive | drift | ETS | LSTM cov80 / cov95 | target held |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["methods"]
        for metric in ("MASE", "sMAPE"):
            cells = " | ".join(f"{m[k][metric]:.3f}" if metric == "MASE" else f"{m[k][metric]:.2f}" for k in METHODS)
            cov = f"{m['lstm']['coverage80']:.2f} / {m['lstm']['coverage95']:.2f}" if metric == "MASE" else ""
            held = "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["targets"].items())
            held = held if metric == "MASE" else ""
            print(f"| {name} | {metric} | {cells} | {cov} | {held} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"backtest": args.backtest, "results": results}, f, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
