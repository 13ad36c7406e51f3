"""Forecasting end to end: data in, LSTM forecast with intervals, baselines and plots out.

The method (the README says the same). The series is filled, optionally logged, and scaled with
statistics of the training part only. The LSTM does not forecast the series from scratch: it
corrects an *anchor*, a simple forecast chosen on the validation part among naive, drift, seasonal
naive, seasonal naive plus last year's change, and damped Holt-Winters (ETS, parameters fitted on
the training part). For each origin the network sees the last L values relative to the last one
and the anchor's recent errors, both divided by the window's mean absolute step, so one network
works at any level and volatility; it outputs all H corrections at once (or one step at a time
with --strategy recursive). Training stops early on the first half of the validation part; the
second half, untouched by that choice, sets how much of the correction to trust (a least-squares
factor in [0, 1]) and calibrates split-conformal intervals. N seeds are trained and their median
is used. Forecasts then start from the anchor re-estimated on the whole history. Naive, seasonal
naive, drift and ETS are scored on the same split, and the report says plainly whether the LSTM
beat the best of them.
"""
import json
import os
import time as _time

import numpy as np
import pandas as pd

from lstmkit.apps import baselines as bl
from lstmkit.apps import conformal as cf
from lstmkit.data import datasets
from lstmkit.data.series import (FILL_STRATEGIES, Scaler, check_column, describe_missing, fill_missing,
                                 future_index, infer_period, seasonal_anchor)

LEVELS = (0.8, 0.95)
OUTPUTS = ("forecast.csv", "metrics.json", "forecast.png", "model")
DEFAULTS = {
    "lookback": None, "horizon": None, "period": None, "anchor": "auto", "strategy": "direct",
    "units": 50, "dropout": 0.0, "epochs": 200, "batch_size": 32, "patience": 20, "learning_rate": 1e-3,
    "ensemble": 5, "seed": 0, "scaling": "standard", "log": False, "fill": "interpolate", "fill_window": 5,
    "val_fraction": 0.2, "backtest": 1, "step": None, "max_windows": 2000,
    "shrink": True,
}
_HORIZONS = {4: 8, 5: 10, 7: 14, 12: 12, 24: 24, 52: 13}
MIN_TRAIN_WINDOWS = 10
MIN_VAL_WINDOWS = 10


# --- input -----------------------------------------------------------------------------------------

def load_frame(dataset=None, csv=None, target=None, time=None, features=None):
    """A DataFrame [target, *features] indexed by time (or row number) from a CSV or a built-in."""
    features = list(features or [])
    if bool(dataset) == bool(csv):
        raise ValueError("give either --dataset NAME (" + ", ".join(datasets.SERIES) + ") or --csv FILE")
    if csv:
        if not target:
            raise ValueError("--target COLUMN is required with --csv")
        return datasets.read_series_csv(csv, target, time, features)
    if features:
        raise ValueError("--features only works with --csv (built-in data sets have one column)")
    return datasets.load_series(dataset)


def clean(df, fill="interpolate", window=5):
    """Check every column, report and fill its missing values. Returns y (n,), X (n, k) or None, notes."""
    if fill not in FILL_STRATEGIES:
        raise ValueError(f"unknown --fill {fill!r}; choose one of {', '.join(FILL_STRATEGIES)}")
    notes, cols = [], []
    for col in df.columns:
        v = df[col].to_numpy(float)
        check_column(v, col, 0)
        note = describe_missing(v, df.index, col)
        if note:
            notes.append(f"missing values: {note}; filled by {fill}")
        cols.append(fill_missing(v, fill, window))
    y = cols[0]
    X = np.column_stack(cols[1:]) if len(cols) > 1 else None
    return y, X, notes


def resolve(cfg, n, index):
    """Fill in the defaults that depend on the data: period, horizon, lookback, backtest step."""
    cfg = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    period = cfg["period"] if cfg["period"] is not None else infer_period(index)
    cfg["period"] = int(period) if period and period >= 2 else None
    m = cfg["period"]
    cfg["horizon"] = int(cfg["horizon"] or _HORIZONS.get(m, m if m and m <= 24 else 10))
    cfg["lookback"] = int(cfg["lookback"] or max(24, 2 * m if m and m <= 60 else (m or 0)))
    cfg["step"] = int(cfg["step"] or cfg["horizon"])
    for key in ("horizon", "lookback", "ensemble", "backtest", "units", "epochs", "batch_size", "step"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {cfg[key]}")
    if not 0 < cfg["val_fraction"] < 0.9:
        raise ValueError("--val-fraction must be between 0 and 0.9")
    if cfg["anchor"] not in ("auto", "none", *ANCHORS):
        raise ValueError(f"--anchor must be auto, none or one of {', '.join(ANCHORS)}")
    if cfg["anchor"] == "ets" and cfg["strategy"] == "recursive":
        raise ValueError("--anchor ets works with --strategy direct only")
    if cfg["anchor"].startswith("seasonal") and not m:
        raise ValueError(f"--anchor {cfg['anchor']} needs a seasonal period; give --period")
    if cfg["strategy"] not in ("direct", "recursive"):
        raise ValueError("--strategy must be direct or recursive")
    min_rows = min_history(cfg) + cfg["horizon"] + cfg["step"] * (cfg["backtest"] - 1)
    if n < min_rows:
        raise ValueError(f"the series has {n} rows but lookback {cfg['lookback']}, horizon {cfg['horizon']}"
                         f"{', backtest ' + str(cfg['backtest']) if cfg['backtest'] > 1 else ''} and the "
                         f"train/validation/test split need at least {min_rows}; use a smaller --lookback, "
                         "--horizon or --backtest, or more data")
    return cfg


def split_origins(n, cfg):
    """Window origins (index of the last input step) for training and validation in a history of n."""
    H = cfg["horizon"]
    origins = np.arange(span(cfg) - 1, n - H)
    n_val = max(MIN_VAL_WINDOWS, int(round(cfg["val_fraction"] * len(origins))))
    val = origins[len(origins) - n_val:] if n_val < len(origins) else origins[:0]
    train = origins[origins + H <= (val[0] if len(val) else -1)]
    return train[-cfg["max_windows"]:], val


def span(cfg):
    """Rows each window reads: the lookback plus one season (or one step) to compute the anchor's
    past errors."""
    m = cfg["period"] or 0
    return max(cfg["lookback"], m) + (m or 1)


def min_history(cfg):
    """The fewest history rows that leave enough training and validation windows."""
    n = span(cfg) + cfg["horizon"]
    while True:
        train, val = split_origins(n, cfg)
        if len(train) >= MIN_TRAIN_WINDOWS and len(val) >= MIN_VAL_WINDOWS:
            return n
        n += 1


# --- the model -------------------------------------------------------------------------------------

class Forecaster:
    """A fitted LSTM forecaster: scalers, anchor, ensemble members and conformal calibration.

    predict(y, X) forecasts the `horizon` values after history y (n,) with covariates X (n, k).
    """

    def __init__(self, cfg, scaler, cov_scaler, anchor=None, target_scale=1.0, members=None,
                 calibration=None, ets=None, shrink=1.0):
        self.cfg, self.scaler, self.cov_scaler, self.shrink = cfg, scaler, cov_scaler, shrink
        self.anchor, self.target_scale, self.ets = anchor, target_scale, ets
        self.members, self.calibration = members if members is not None else [], calibration
        self.gain = None

    # inputs and targets -----------------------------------------------------------------------
    def scaled(self, y, X):
        return self.scaler.transform(y), None if X is None else self.cov_scaler.transform(X)

    def windows(self, z, xs, origins):
        """The span rows ending at each origin: z (n,) -> (B, S); xs (n, k) -> (B, S, k) or None."""
        past = origins[:, None] + np.arange(-span(self.cfg) + 1, 1)[None, :]
        return z[past], None if xs is None else xs[past]

    def inputs(self, z, xs, origins):
        """Network inputs, anchor and window scale for windows of z (n,) ending at origins (B,)."""
        zin, xin = self.windows(z, xs, origins)
        if self.anchor != "ets":
            return self.design(zin, xin)
        forecasts, errors = bl.ets_track(z, self.ets, self.cfg["horizon"])
        past = origins[:, None] + np.arange(-self.cfg["lookback"] + 1, 1)[None, :]
        return self.design(zin, xin, forecasts[origins], errors[past])

    def design(self, zin, xin, a=None, e=None):
        """Windows zin (B, S) of the scaled target and xin (B, S, k) or None of scaled covariates
        (S = span: lookback L plus one season) -> network inputs (B, L, 2 + k) float32, anchor
        (B, H_out) and window scale s (B,). a (B, H) and e (B, L) give the anchor and its past
        errors when they are not computable from the window (the ETS anchor).

        Channels: the last L values relative to the last one and the errors the anchor made at
        those steps (for the simple anchors: the value minus the value one lag earlier), both
        divided by s (the window's mean absolute step), then the covariates.
        With --anchor none: the scaled values alone, and the network predicts scaled values."""
        H = self.cfg["horizon"] if self.cfg["strategy"] == "direct" else 1
        L = self.cfg["lookback"]
        last = zin[:, -L:]
        if self.anchor == "none":
            a, s, chans = np.zeros((len(zin), H)), np.ones(len(zin)), [last]
        else:
            s = np.maximum(np.mean(np.abs(np.diff(last, axis=1)), axis=1), 1e-3)
            if a is None:
                lag = self.cfg["period"] if self.anchor.startswith("seasonal") else 1
                a = anchor_forecast(zin, H, self.anchor, self.cfg["period"], L)
                e = last - zin[:, -L - lag:zin.shape[1] - lag]
            chans = [(last - last[:, -1:]) / s[:, None], e / s[:, None]]
        inp = np.stack(chans, axis=-1)
        if xin is not None:
            inp = np.concatenate([inp, xin[:, -L:]], axis=-1)
        return inp.astype(np.float32), a, s

    def correction(self, inp):
        """The ensemble median of the members' outputs (B, H_out) for inputs (B, L, F)."""
        outs = np.stack([np.asarray(m.predict(inp), float).reshape(len(inp), -1) for m in self.members])
        return np.median(outs, axis=0)

    def network(self, inp, a, s):
        """Anchor plus the shrunk, rescaled ensemble correction -> scaled values (B, H_out)."""
        return a + s[:, None] * self.shrink * self.correction(inp) * self.target_scale

    def forecast_z(self, z, xs, origins):
        """Scaled forecasts (B, H) from windows of z (n,), xs (n, k) or None ending at origins (B,),
        and the window scales (B,)."""
        if self.cfg["strategy"] == "direct":
            inp, a, s = self.inputs(z, xs, origins)
            return self.network(inp, a, s), s
        buf, xbuf = self.windows(z, xs, origins)
        out, s0 = [], None
        for _ in range(self.cfg["horizon"]):
            inp, a, s = self.design(buf, xbuf)
            step = self.network(inp, a, s)[:, 0]
            s0 = s if s0 is None else s0
            out.append(step)
            buf = np.concatenate([buf[:, 1:], step[:, None]], axis=1)
            if xbuf is not None:  # future covariates are unknown: hold the last ones
                xbuf = np.concatenate([xbuf[:, 1:], xbuf[:, -1:]], axis=1)
        return np.stack(out, axis=1), s0

    def predict(self, y, X=None):
        """History y (n,), X (n, k) or None -> {"forecast": (H,), 0.8: (lo, hi), 0.95: (lo, hi)} in
        original units."""
        if len(y) < span(self.cfg):
            raise ValueError(f"need at least {span(self.cfg)} rows (lookback plus one season) to forecast, "
                             f"got {len(y)}")
        z, xs = self.scaled(np.asarray(y, float), X)
        fz, s = self.forecast_z(z, xs, np.array([len(z) - 1]))
        out = {"forecast": self.scaler.inverse(fz[0])}
        if self.calibration:
            for level, (lo, hi) in cf.intervals(fz[0], self.calibration, s[0]).items():
                out[level] = (self.scaler.inverse(lo), self.scaler.inverse(hi))
        return out

    # saving -------------------------------------------------------------------------------------
    def metadata(self):
        return {"format": "lstmkit.forecast/1", "cfg": self.cfg, "scaler": self.scaler.to_dict(),
                "cov_scaler": self.cov_scaler.to_dict() if self.cov_scaler else None,
                "anchor": self.anchor, "ets": self.ets, "shrink": self.shrink,
                "target_scale": self.target_scale,
                "calibration": {"width": self.calibration["width"].tolist(),
                                "q": {str(k): v for k, v in self.calibration["q"].items()}}}

    def save(self, directory, extra=None):
        from lstmkit.checkpoint import save_model
        os.makedirs(directory, exist_ok=True)
        meta = {**self.metadata(), **(extra or {})}
        for i, member in enumerate(self.members):
            save_model(member, os.path.join(directory, f"member{i}.safetensors"), extra=meta,
                       include_optimizer=False)

    @classmethod
    def load(cls, directory):
        from lstmkit.checkpoint import load_model
        if os.path.isdir(os.path.join(directory, "model")):
            directory = os.path.join(directory, "model")
        files = [f for f in os.listdir(directory) if f.startswith("member") and f.endswith(".safetensors")] \
            if os.path.isdir(directory) else []
        if not files:
            raise ValueError(f"no saved forecast model in {directory} (expected member*.safetensors from "
                             "`lstmkit forecast --out DIR`)")
        members, meta = [], None
        for f in sorted(files, key=lambda f: int(f[6:-12])):
            model, meta = load_model(os.path.join(directory, f))
            members.append(model)
        if not meta or meta.get("format") != "lstmkit.forecast/1":
            raise ValueError(f"{directory} does not hold a forecast model")
        cal = {"width": np.asarray(meta["calibration"]["width"]),
               "q": {float(k): v for k, v in meta["calibration"]["q"].items()}}
        cov = Scaler.from_dict(meta["cov_scaler"]) if meta["cov_scaler"] else None
        fc = cls(meta["cfg"], Scaler.from_dict(meta["scaler"]), cov, meta["anchor"], meta["target_scale"],
                 members, cal, meta["ets"], meta["shrink"])
        return fc, meta


def _build_member(cfg, n_features, n_out, seed):
    from lstmkit.layers import LSTM, Dense, Dropout
    from lstmkit.model import Sequential
    from lstmkit.optim import Adam
    layers = [LSTM(cfg["units"])] + ([Dropout(cfg["dropout"])] if cfg["dropout"] else []) + [Dense(n_out)]
    model = Sequential(layers, seed=seed)
    model.compile(optimizer=Adam(cfg["learning_rate"], clipnorm=1.0), loss="mse")
    return model


def _train_member(cfg, x, y, xv, yv, seed):
    """One LSTM -> Dense network fitted on (x (B, L, F), y (B, H_out)), stopped early on validation
    (xv, yv), with the weights of its best epoch."""
    from lstmkit.callbacks import EarlyStopping
    model = _build_member(cfg, x.shape[-1], y.shape[1], seed)
    stop = EarlyStopping(patience=cfg["patience"], restore_best_weights=True)
    model.fit(x, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], validation_data=(xv, yv),
              callbacks=[stop], verbose=0)
    return model


def fit_forecaster(y, X, cfg):
    """Fit scalers, anchor, the ensemble and conformal calibration on history y (n,), X (n, k)."""
    H = cfg["horizon"]
    train_o, val_o = split_origins(len(y), cfg)
    fit_end = val_o[0] + 1                     # training windows touch only y[:fit_end]
    scaler = Scaler(cfg["scaling"], cfg["log"]).fit(y[:fit_end])
    cov_scaler = Scaler(cfg["scaling"]).fit(X[:fit_end]) if X is not None else None
    fc = Forecaster(cfg, scaler, cov_scaler)
    z, xs = fc.scaled(y, X)
    if cfg["anchor"] in ("auto", "ets") and cfg["strategy"] == "direct":
        fc.ets = bl.ets_params(z[:fit_end], cfg["period"])
    fc.anchor = choose_anchor(z, val_o, cfg, fc.ets)
    steps = np.arange(1, (H if cfg["strategy"] == "direct" else 1) + 1)

    def data(origins):
        inp, a, s = fc.inputs(z, xs, origins)
        return inp, (z[origins[:, None] + steps] - a) / s[:, None]

    x_tr, t_tr = data(train_o)
    # validation: the first half stops training early, the second half (untouched by that choice)
    # sets the shrink factor and calibrates the intervals
    stop_o, cal_o = val_o[:len(val_o) // 2], val_o[len(val_o) // 2:]
    x_va, t_va = data(stop_o)
    x_cal, t_cal = data(cal_o)
    fc.target_scale = float(np.std(t_tr)) or 1.0
    t_tr, t_va, t_cal = t_tr / fc.target_scale, t_va / fc.target_scale, t_cal / fc.target_scale
    for i in range(cfg["ensemble"]):
        fc.members.append(_train_member(cfg, x_tr, t_tr.astype(np.float32), x_va, t_va.astype(np.float32),
                                        cfg["seed"] + i))
    if cfg["anchor"] != "none" and cfg["shrink"]:   # trust the correction as far as it helps on validation
        fc.shrink, fc.gain = trust(fc.correction(x_cal), t_cal)
    fz, s = fc.forecast_z(z, xs, cal_o)
    resid = z[cal_o[:, None] + np.arange(1, H + 1)] - fz
    fc.calibration = cf.calibrate(resid, s, LEVELS)
    if fc.anchor == "ets":      # forecasts start from ETS re-estimated on the whole history
        fc.ets = bl.ets_params(z, cfg["period"])
    return fc


def trust(c, t):
    """How much of the correction c (B, H) to keep, given the anchor's actual errors t (B, H) on
    calibration windows. The least-squares factor lam in [0, 1] is shrunk by 1 - 1/T^2, T being its
    t-statistic with B / H independent windows (windows H apart do not overlap):
    T^2 = n * gain / (1 - gain), gain = the share of squared error the correction removes.
    A correction that cannot be told from chance on this much data is switched off.
    Returns (factor, gain)."""
    lam = float(np.clip(np.sum(c * t) / max(np.sum(c * c), 1e-12), 0.0, 1.0))
    gain = float(1.0 - np.sum((t - lam * c) ** 2) / max(np.sum(t * t), 1e-12))
    n_independent = max(len(c) / c.shape[1], 1.0)
    t2 = n_independent * gain / max(1.0 - gain, 1e-12)
    return lam * max(0.0, 1.0 - 1.0 / max(t2, 1e-12)), gain


ANCHORS = ("naive", "drift", "seasonal", "seasonal-drift", "ets")


def anchor_forecast(zin, horizon, kind, period, lookback):
    """A simple forecast the network corrects, from windows zin (B, S) -> (B, horizon).

    naive: the last value. drift: plus the mean step over the lookback. seasonal: the value one
    season earlier. seasonal-drift: plus, per season ahead, the mean change over the last season
    (the mean of the last `period` seasonal differences). (ets needs the whole series: ets_track.)"""
    H = horizon
    if kind in ("naive", "drift"):
        a = np.repeat(zin[:, -1:], H, axis=1)
        if kind == "drift":
            a = a + (zin[:, -1:] - zin[:, -lookback:-lookback + 1]) / (lookback - 1) * np.arange(1, H + 1)
        return a
    m = period
    a = seasonal_anchor(zin, H, m)
    if kind == "seasonal-drift":
        seasons = np.ceil(np.arange(1, H + 1) / m)
        change = np.mean(zin[:, -m:] - zin[:, -2 * m:-m], axis=1)
        a = a + change[:, None] * seasons[None, :]
    return a


def choose_anchor(z, origins, cfg, ets=None):
    """The anchor: with --anchor auto, the candidate with the lowest mean absolute error over the
    horizon from the validation origins (B,) of the scaled series z (n,). Candidates: naive, drift,
    with a period seasonal and seasonal-drift, and ETS (params `ets` fitted on the training part;
    direct strategy only)."""
    if cfg["anchor"] != "auto":
        return cfg["anchor"]
    m, H, L = cfg["period"], cfg["horizon"], cfg["lookback"]
    kinds = [k for k in ANCHORS if (m or not k.startswith("seasonal")) and (k != "ets" or ets)]
    S = span(cfg)
    zin = z[origins[:, None] + np.arange(-S + 1, 1)]
    actual = z[origins[:, None] + np.arange(1, H + 1)]
    errors = {k: np.mean(np.abs(actual - anchor_forecast(zin, H, k, m, L))) for k in kinds if k != "ets"}
    if "ets" in kinds:
        errors["ets"] = np.mean(np.abs(actual - bl.ets_track(z, ets, H)[0][origins]))
    return min(errors, key=errors.get)


# --- evaluation ------------------------------------------------------------------------------------

def evaluate_origin(y, X, origin, cfg):
    """Fit on y[:origin], forecast y[origin:origin+H] with the LSTM and every baseline.
    Returns (fitted Forecaster, {"forecasts": {method: (H,)}, "intervals": {...}, "metrics": {...}})."""
    H, m = cfg["horizon"], cfg["period"]
    hist, actual = y[:origin], y[origin:origin + H]
    Xh = None if X is None else X[:origin]
    fc = fit_forecaster(hist, Xh, cfg)
    pred = fc.predict(hist, Xh)
    forecasts = {"lstm": pred["forecast"], **bl.baseline_forecasts(hist, H, m)}
    scale = bl.mase_scale(hist, m)
    metrics = {name: bl.accuracy(actual, f, scale) for name, f in forecasts.items()}
    for level in LEVELS:
        metrics["lstm"][f"coverage{int(level * 100)}"] = cf.coverage(actual, *pred[level])
    network = {"anchor": fc.anchor, "trust": fc.shrink, "gain": fc.gain}
    return fc, {"forecasts": forecasts, "intervals": {lv: pred[lv] for lv in LEVELS}, "metrics": metrics,
                "network": network}


def backtest(y, X, cfg, progress=None):
    """Rolling-origin evaluation: K = cfg["backtest"] origins, `step` apart, the last one leaving
    exactly H test values. Returns (Forecaster of the last origin, per-origin results, origins)."""
    n, H, K, step = len(y), cfg["horizon"], cfg["backtest"], cfg["step"]
    origins = [n - H - step * (K - 1 - k) for k in range(K)]
    results, fc = [], None
    for k, origin in enumerate(origins):
        t0 = _time.time()
        fc, res = evaluate_origin(y, X, origin, cfg)
        results.append(res)
        if progress:
            progress(k, K, res, _time.time() - t0)
    return fc, results, origins


def summarize(results):
    """Average each method's metrics over origins and name the best baseline (lowest MASE)."""
    methods = {}
    for name in results[0]["metrics"]:
        keys = results[0]["metrics"][name]
        methods[name] = {k: float(np.mean([r["metrics"][name][k] for r in results])) for k in keys}
    best = min(bl.BASELINES, key=lambda b: methods[b]["MASE"])
    return methods, best


def verdict(methods, best, networks=()):
    """One line: did the LSTM beat the best baseline on MASE? Says so too when the network's
    correction was (nearly) switched off, i.e. the LSTM forecast is just its anchor."""
    lstm, base = methods["lstm"]["MASE"], methods[best]["MASE"]
    if lstm < base:
        line = (f"LSTM beat the best baseline ({best}): MASE {lstm:.3f} vs {base:.3f} "
                f"({100 * (1 - lstm / base):.1f}% lower).")
    else:
        line = (f"LSTM did NOT beat the best baseline ({best}): MASE {lstm:.3f} vs {base:.3f} "
                f"({100 * (lstm / base - 1):.1f}% worse); prefer {best} for this series.")
    kept = [n["trust"] for n in networks if n["anchor"] != "none"]
    if kept and max(kept) < 0.05:
        anchors = sorted({n["anchor"] for n in networks})
        line += (f" The network's correction did not prove itself on validation data, so the LSTM forecast "
                 f"is its anchor ({', '.join(anchors)}).")
    return line


# --- the app ---------------------------------------------------------------------------------------

def forecast(dataset=None, csv=None, target=None, time=None, features=None, out=None, overwrite=False,
             plot=True, progress=None, **settings):
    """Run the whole job and, when `out` is given, write forecast.csv, metrics.json, forecast.png and
    model/ there. Returns a dict with cfg, metrics summary, verdict, notes, forecast table."""
    if out:
        _check_out(out, overwrite)
    df = load_frame(dataset, csv, target, time, features)
    y, X, notes = clean(df, settings.get("fill") or DEFAULTS["fill"], settings.get("fill_window") or 5)
    cfg = resolve(settings, len(y), df.index)
    t0 = _time.time()
    fc, results, origins = backtest(y, X, cfg, progress)
    methods, best = summarize(results)
    last = results[-1]
    origin = origins[-1]
    future = fc.predict(y, X)
    table = _forecast_table(df.index, y, origin, cfg["horizon"], last, best, future)
    summary = {
        "data": dataset or os.path.abspath(csv), "target": df.columns[0], "rows": len(y),
        "features": list(df.columns[1:]), "settings": cfg, "anchor": fc.anchor,
        "origins": [_label(df.index, o) for o in origins], "methods": methods, "best_baseline": best,
        "lstm_beats_best_baseline": bool(methods["lstm"]["MASE"] < methods[best]["MASE"]),
        "verdict": verdict(methods, best, [r["network"] for r in results]), "missing": notes,
        "seconds": round(_time.time() - t0, 1),
        "per_origin": [{**r["metrics"], "network": r["network"]} for r in results],
    }
    if out:
        os.makedirs(out, exist_ok=True)
        table.to_csv(os.path.join(out, "forecast.csv"), index=False)
        _write_json(os.path.join(out, "metrics.json"), summary)
        fc.save(os.path.join(out, "model"), extra={"target": df.columns[0], "features": list(df.columns[1:]),
                                                  "time": time})
        if plot:
            from lstmkit.plots import plot_forecast
            plot_forecast(table, os.path.join(out, "forecast.png"), title=f"{summary['target']}: {summary['verdict']}",
                          best=best)
    return {"summary": summary, "table": table, "forecaster": fc}


def predict(model, csv=None, dataset=None, time=None, out=None, overwrite=False):
    """Forecast the horizon after the end of new data with a saved model (its scaler and settings).
    The CSV needs the target and feature columns of the run (and its time column, by default the
    run's); give the whole series, old rows and new: the ETS anchor is run from its start."""
    fc, meta = Forecaster.load(model)
    if csv and not os.path.isfile(csv):
        raise ValueError(f"CSV file not found: {csv}")
    df = load_frame(dataset, csv, meta["target"], time or (meta.get("time") if csv else None),
                    meta["features"] if csv else None)
    y, X, notes = clean(df, fc.cfg["fill"], fc.cfg["fill_window"])
    pred = fc.predict(y, X)
    index = future_index(df.index, fc.cfg["horizon"])
    table = pd.DataFrame({"time": index, "forecast": pred["forecast"]})
    for level in LEVELS:
        table[f"lower{int(level * 100)}"], table[f"upper{int(level * 100)}"] = pred[level]
    if out:
        if os.path.exists(out) and not overwrite:
            raise ValueError(f"{out} exists; choose another --out or pass --overwrite")
        table.to_csv(out, index=False)
    return {"table": table, "notes": notes}


def _forecast_table(index, y, origin, H, last, best, future):
    """Rows for the test part (actual, every method, LSTM intervals) then the future forecast."""
    test_idx = index[origin:origin + H]
    rows = pd.DataFrame({"time": test_idx, "part": "test", "actual": y[origin:origin + H]})
    for name, f in last["forecasts"].items():
        rows[name] = f
    fut = pd.DataFrame({"time": future_index(index, H), "part": "future", "actual": np.nan,
                        "lstm": future["forecast"]})
    for level in LEVELS:
        tag = int(level * 100)
        rows[f"lower{tag}"], rows[f"upper{tag}"] = last["intervals"][level]
        fut[f"lower{tag}"], fut[f"upper{tag}"] = future[level]
    hist = pd.DataFrame({"time": index[:origin], "part": "history", "actual": y[:origin]})
    table = pd.concat([hist, rows, fut], ignore_index=True)
    table.attrs["best"] = best
    return table


def _label(index, i):
    v = index[i]
    return v.strftime("%Y-%m-%d") if isinstance(v, pd.Timestamp) else int(v)


def _check_out(out, overwrite):
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; give a directory")
    taken = [f for f in OUTPUTS if os.path.exists(os.path.join(out, f))]
    if taken and not overwrite:
        raise ValueError(f"{out} already holds {', '.join(taken)}; choose another --out or pass --overwrite")


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


# --- command line ----------------------------------------------------------------------------------

SETTINGS = ("lookback", "horizon", "period", "anchor", "strategy", "units", "dropout", "epochs", "batch_size",
            "patience", "learning_rate", "ensemble", "seed", "scaling", "log", "fill", "fill_window",
            "val_fraction", "backtest", "step", "max_windows", "shrink")


def run(args):
    """`lstmkit forecast [run|predict]` with the parsed arguments."""
    if args.action == "predict":
        return run_predict(args)
    if args.model:
        raise ValueError("--model is for `lstmkit forecast predict`")
    name = args.dataset or os.path.splitext(os.path.basename(args.csv or "csv"))[0]
    out = args.out or _fresh_dir("forecast-" + name)
    say = (lambda *a: None) if args.quiet else print
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None

    def progress(k, total, res, seconds):
        m = res["metrics"]
        best = min(bl.BASELINES, key=lambda b: m[b]["MASE"])
        net = res["network"]
        say(f"origin {k + 1}/{total}: LSTM MASE {m['lstm']['MASE']:.3f} (anchor {net['anchor']}, correction "
            f"kept {100 * net['trust']:.0f}%), best baseline {best} {m[best]['MASE']:.3f} ({seconds:.1f} s)")

    settings = {k: getattr(args, k) for k in SETTINGS}
    result = forecast(dataset=args.dataset, csv=args.csv, target=args.target, time=args.time, features=features,
                      out=out, overwrite=args.overwrite, plot=not args.no_plot, progress=progress, **settings)
    report(result, out, say, plot=not args.no_plot)
    return 0


def demo_command(args):
    """The forecasting part of `lstmkit demo`: the default forecast of the built-in co2 series."""
    out = _fresh_dir("forecast-co2")
    report(forecast(dataset="co2", out=out, seed=args.seed), out, print)
    return 0


def report(result, out, say, plot=True):
    """Print what a forecast run found: missing values, settings, the metrics table, the verdict."""
    s = result["summary"]
    for note in s["missing"]:
        say(note)
    cfg = s["settings"]
    say(f"{s['target']}: {s['rows']} rows, period {cfg['period'] or 'none'}, lookback {cfg['lookback']}, "
        f"horizon {cfg['horizon']}, anchor {s['anchor']}, {cfg['ensemble']} seed(s), "
        f"{cfg['backtest']} origin(s)")
    say(format_metrics(s["methods"], s["best_baseline"]))
    print(s["verdict"])
    say(f"wrote {out}/forecast.csv, metrics.json, {'forecast.png, ' if plot else ''}model/")


def run_predict(args):
    if not args.model:
        raise ValueError("`lstmkit forecast predict` needs --model DIR (the --out of a forecast run)")
    res = predict(args.model, csv=args.csv, dataset=args.dataset, time=args.time, out=args.out,
                  overwrite=args.overwrite)
    for note in res["notes"]:
        print(note)
    print(res["table"].to_string(index=False))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def format_metrics(methods, best):
    """A plain-text table: one row per method, columns MAE RMSE MASE sMAPE (and coverage for lstm)."""
    lines = [f"{'method':<15}{'MAE':>11}{'RMSE':>11}{'MASE':>8}{'sMAPE':>8}{'cov80':>7}{'cov95':>7}"]
    for name, m in methods.items():
        cov = f"{m['coverage80']:>7.2f}{m['coverage95']:>7.2f}" if "coverage80" in m else ""
        mark = " *" if name == best else ""
        lines.append(f"{name + mark:<15}{m['MAE']:>11.4g}{m['RMSE']:>11.4g}{m['MASE']:>8.3f}{m['sMAPE']:>8.2f}{cov}")
    return "\n".join(lines)


def _fresh_dir(base):
    """base, or base-2, base-3, ... : the first name that does not exist yet."""
    name, i = base, 1
    while os.path.exists(name):
        i += 1
        name = f"{base}-{i}"
    return name
