"""Time series to arrays: missing values, checks, scaling, seasonal period, windows.

Everything here is pure: arrays or pandas objects in, arrays out. Nothing prints or reads files.
Shapes: a series is (n,), covariates are (n, k); windows are batch-first (batch, lookback, features).
"""
import warnings

import numpy as np
import pandas as pd

FILL_STRATEGIES = ("interpolate", "mean", "median", "mode", "ffill", "moving-average")


# --- missing values -------------------------------------------------------------------------------

def missing_runs(values, labels=None):
    """Runs of missing values as [(first_label, last_label, length), ...] for a (n,) array."""
    miss = np.isnan(np.asarray(values, dtype=float))
    labels = np.arange(len(miss)) if labels is None else list(labels)
    runs, start = [], None
    for i, m in enumerate(miss):
        if m and start is None:
            start = i
        if start is not None and (not m or i == len(miss) - 1):
            end = i if m else i - 1
            runs.append((labels[start], labels[end], end - start + 1))
            start = None
    return runs


def describe_missing(values, labels=None, name="series", max_runs=5):
    """One line saying how many values are missing and where, or None when none are."""
    runs = missing_runs(values, labels)
    if not runs:
        return None
    total = sum(r[2] for r in runs)
    parts = [_fmt_label(a) if n == 1 else f"{_fmt_label(a)}..{_fmt_label(b)}" for a, b, n in runs[:max_runs]]
    more = f" and {len(runs) - max_runs} more gaps" if len(runs) > max_runs else ""
    return f"{name}: {total} missing of {len(values)} at {', '.join(parts)}{more}"


def _fmt_label(x):
    if isinstance(x, pd.Timestamp):
        return x.strftime("%Y-%m-%d") if (x.hour, x.minute, x.second) == (0, 0, 0) else str(x)
    return str(x)


def fill_missing(values, strategy="interpolate", window=5):
    """Fill NaNs in a (n,) array; returns a new float array of the same shape.

    mean / median / mode: the statistic of the observed values (mode = most frequent value, the
    smallest one on ties). ffill: last observed value (leading gaps take the first observed one).
    interpolate: linear between neighbours, ends held at the nearest observed value.
    moving-average: the mean of the previous `window` values, left to right, so a long gap is
    filled from values already filled (leading gaps take the first observed value).
    """
    if strategy not in FILL_STRATEGIES:
        raise ValueError(f"unknown missing-value strategy {strategy!r}; choose one of {', '.join(FILL_STRATEGIES)}")
    y = np.array(values, dtype=float)
    miss = np.isnan(y)
    if not miss.any():
        return y
    if miss.all():
        raise ValueError("the series has no observed values to fill missing ones from")
    obs = y[~miss]
    if strategy == "mean":
        y[miss] = obs.mean()
    elif strategy == "median":
        y[miss] = np.median(obs)
    elif strategy == "mode":
        vals, counts = np.unique(obs, return_counts=True)
        y[miss] = vals[np.argmax(counts)]
    elif strategy == "ffill":
        y = pd.Series(y).ffill().bfill().to_numpy()
    elif strategy == "interpolate":
        idx = np.arange(len(y))
        y[miss] = np.interp(idx[miss], idx[~miss], obs)
    else:  # moving-average
        if window < 1:
            raise ValueError(f"moving-average window must be at least 1, got {window}")
        first = np.argmax(~miss)
        y[:first] = y[first]
        for i in np.flatnonzero(miss):
            if i > first:
                y[i] = y[max(0, i - window):i].mean()
    return y


# --- checks ----------------------------------------------------------------------------------------

def check_column(values, name, min_length):
    """Raise a ValueError saying what is wrong when a (n,) column cannot be forecast."""
    y = np.asarray(values, dtype=float)
    obs = y[~np.isnan(y)]
    if len(obs) == 0:
        raise ValueError(f"column {name!r} has no numeric values (all {len(y)} are missing)")
    if np.isinf(obs).any():
        raise ValueError(f"column {name!r} contains infinite values; remove or replace them")
    if np.ptp(obs) == 0:
        raise ValueError(f"column {name!r} is constant ({obs[0]:g}): there is nothing to forecast")
    if len(y) < min_length:
        raise ValueError(f"column {name!r} has {len(y)} rows but at least {min_length} are needed for this "
                         "lookback, horizon and split; use a smaller --lookback or --horizon, or more data")


# --- scaling ---------------------------------------------------------------------------------------

class Scaler:
    """Optional log, then standard ((x - mean) / std) or min-max ((x - min) / (max - min)) scaling.

    Fit on the training part only; `transform` and `inverse` work on arrays of any shape whose last
    axis is the features (k,) the scaler was fitted on, or on a (n,) array when k == 1.
    """

    def __init__(self, method="standard", log=False):
        if method not in ("standard", "minmax"):
            raise ValueError(f"unknown scaling {method!r}; choose standard or minmax")
        self.method, self.log = method, bool(log)
        self.shift = self.scale = None

    def fit(self, x):
        x = self._pre(np.asarray(x, dtype=float))
        x2 = x.reshape(len(x), -1)
        if self.method == "standard":
            shift, scale = x2.mean(axis=0), x2.std(axis=0)
        else:
            shift, scale = x2.min(axis=0), x2.max(axis=0) - x2.min(axis=0)
        self.shift, self.scale = shift, np.where(scale > 0, scale, 1.0)
        return self

    def _pre(self, x):
        if not self.log:
            return x
        if np.nanmin(x) <= 0:
            raise ValueError("--log needs strictly positive values; the series has values <= 0")
        return np.log(x)

    def transform(self, x):
        x = self._pre(np.asarray(x, dtype=float))
        return (x - self.shift) / self.scale

    def inverse(self, z):
        z = np.asarray(z, dtype=float)
        x = z * self.scale + self.shift
        return np.exp(x) if self.log else x

    def to_dict(self):
        return {"method": self.method, "log": self.log, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d):
        s = cls(d["method"], d["log"])
        s.shift, s.scale = np.asarray(d["shift"], float), np.asarray(d["scale"], float)
        return s


# --- seasonal period ------------------------------------------------------------------------------

_PERIODS = {"h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4}


def infer_frequency(index):
    """A pandas frequency code for a DatetimeIndex ('MS', 'D', 'B', ...), or None when irregular."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 3:
        return None
    if index.freqstr:
        return index.freqstr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # pandas 3 announces a change of return type
        freq = pd.infer_freq(index)
    if freq:
        return getattr(freq, "freqstr", freq)
    days = pd.Series(index).diff().median() / pd.Timedelta(days=1)
    if 0.99 < days < 1.01 and not (index.day_of_week >= 5).any():
        return "B"  # daily trading days with holidays left out
    return None


def infer_period(index):
    """Seasonal period implied by a time index (12 for monthly, 4 quarterly, 52 weekly, 7 daily,
    5 business-daily, 24 hourly), or None when there is none (yearly, plain row numbers)."""
    freq = infer_frequency(index)
    if not freq:
        return None
    code = freq.split("-")[0].lstrip("0123456789")
    if code.startswith(("Y", "A")):
        return None
    for key in ("h", "H", "B", "D", "W", "Q", "M"):
        if code.startswith(key):
            return _PERIODS[key.replace("H", "h")]
    return None


def future_index(index, horizon):
    """Labels for the `horizon` steps after a series' index: dates when the frequency is known,
    else following integers."""
    freq = infer_frequency(index)
    if freq:
        return pd.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]
    last = index[-1] if len(index) and isinstance(index[-1], (int, np.integer)) else len(index) - 1
    return pd.RangeIndex(last + 1, last + 1 + horizon)


# --- windows ---------------------------------------------------------------------------------------

def make_windows(series, lookback, horizon, covariates=None, origins=None):
    """Sliding windows for direct multi-step forecasting.

    series (n,), covariates (n, k) or None. A window with origin t (the index of its last input
    step) has inputs series[t-L+1 .. t] (and the covariates at those steps) and targets
    series[t+1 .. t+H]. By default every origin with a full input and target range is used.
    Returns x (batch, lookback, 1 + k), y (batch, horizon), origins (batch,).
    """
    s = np.asarray(series, dtype=float)
    n = len(s)
    if origins is None:
        origins = np.arange(lookback - 1, n - horizon)
    origins = np.asarray(origins, dtype=int)
    if len(origins) and (origins.min() < lookback - 1 or origins.max() + horizon > n - 1):
        raise ValueError("window origins out of range for this lookback and horizon")
    feats = s[:, None] if covariates is None else np.column_stack([s, np.asarray(covariates, dtype=float)])
    past = origins[:, None] + np.arange(-lookback + 1, 1)[None, :]
    x = feats[past]
    y = s[origins[:, None] + np.arange(1, horizon + 1)[None, :]] if horizon else np.zeros((len(origins), 0))
    return x, y, origins


def seasonal_anchor(history, horizon, period):
    """Seasonal-naive forecast from the end of `history` (..., n) -> (..., horizon): the value one
    season before each target step; with period None or 1 this is the last value repeated."""
    h = np.asarray(history, dtype=float)
    m = period or 1
    steps = np.arange(1, horizon + 1)
    lag = m * np.ceil(steps / m).astype(int)       # how far back the matching season lies
    return h[..., h.shape[-1] - lag + steps - 1]
