"""Classical baseline forecasts and the accuracy measures every forecast is judged by.

Each baseline takes the history y (n,) in original units and returns the next `horizon` values
(horizon,). The measures follow Hyndman & Koehler (2006): MASE scales the MAE by the in-sample
mean absolute seasonal difference of the history, so 1.0 means "as good as seasonal naive in
sample" and below 1 is better.
"""
import warnings

import numpy as np

from lstmkit.data.series import seasonal_anchor

BASELINES = ("naive", "seasonal_naive", "drift", "ets")


def naive(y, horizon, period=None):
    """The last value, repeated: (n,) -> (horizon,)."""
    return np.full(horizon, float(y[-1]))


def seasonal_naive(y, horizon, period=None):
    """The value one season earlier (the last value when there is no period): (n,) -> (horizon,)."""
    if not period or period < 2 or len(y) < period:
        return naive(y, horizon)
    return seasonal_anchor(y, horizon, period)


def drift(y, horizon, period=None):
    """The line from the first to the last value, extended: (n,) -> (horizon,)."""
    slope = (y[-1] - y[0]) / max(len(y) - 1, 1)
    return y[-1] + slope * np.arange(1, horizon + 1)


def ets(y, horizon, period=None):
    """Exponential smoothing with a damped additive trend, plus additive seasonality when there is
    a period and at least two full seasons (statsmodels Holt-Winters): (n,) -> (horizon,)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    seasonal = period if period and period >= 2 and len(y) >= 2 * period + 2 else None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            fit = ExponentialSmoothing(np.asarray(y, float), trend="add", damped_trend=True,
                                       seasonal="add" if seasonal else None, seasonal_periods=seasonal,
                                       initialization_method="estimated").fit()
            out = np.asarray(fit.forecast(horizon), float)
        except (ValueError, np.linalg.LinAlgError):
            out = np.full(horizon, np.nan)
    return out if np.isfinite(out).all() else naive(y, horizon)


def ets_params(y, period=None):
    """Fit the same damped Holt-Winters model as `ets` and return its parameters as JSON-able floats:
    alpha, beta, gamma, phi, level0, trend0, seasons0 (list of `period` values, [0.0] without)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    seasonal = period if period and period >= 2 and len(y) >= 2 * period + 2 else None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        p = ExponentialSmoothing(np.asarray(y, float), trend="add", damped_trend=True,
                                 seasonal="add" if seasonal else None, seasonal_periods=seasonal,
                                 initialization_method="estimated").fit().params
    return {"alpha": float(p["smoothing_level"]), "beta": float(p["smoothing_trend"]),
            "gamma": float(p["smoothing_seasonal"]) if seasonal else 0.0, "phi": float(p["damping_trend"]),
            "level0": float(p["initial_level"]), "trend0": float(p["initial_trend"]),
            "seasons0": [float(v) for v in p["initial_seasons"]] if seasonal else [0.0]}


def ets_track(y, params, horizon):
    """Run damped Holt-Winters with fixed params over y (n,): the forecasts (n, horizon) made after
    each step t for t+1..t+horizon, and the one-step errors (n,) y_t - (forecast of y_t from t-1)."""
    a, b, g, phi = params["alpha"], params["beta"], params["gamma"], params["phi"]
    m = len(params["seasons0"])
    y = np.asarray(y, float)
    n = len(y)
    seas = np.empty(n + m)
    seas[:m] = params["seasons0"]            # seas[i] is the season term of time i - m
    level, trend = params["level0"], params["trend0"]
    levels, trends, errors = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        base = level + phi * trend
        errors[i] = y[i] - (base + seas[i])
        new_level = a * (y[i] - seas[i]) + (1 - a) * base
        trend = b * (new_level - level) + (1 - b) * phi * trend
        seas[i + m] = g * (y[i] - base) + (1 - g) * seas[i]
        level = new_level
        levels[i], trends[i] = level, trend
    h = np.arange(1, horizon + 1)
    damp = np.cumsum(phi ** h)                                       # phi + ... + phi^h
    season_at = np.arange(n)[:, None] + m + h[None, :] - m * np.ceil(h / m).astype(int)[None, :]
    return levels[:, None] + trends[:, None] * damp[None, :] + seas[season_at], errors


def baseline_forecasts(y, horizon, period=None):
    """All baselines from the end of history y (n,): {name: (horizon,)}."""
    return {name: globals()[name](y, horizon, period) for name in BASELINES}


# --- accuracy -------------------------------------------------------------------------------------

def mase_scale(history, period=None):
    """In-sample mean absolute seasonal difference of history (n,) (lag 1 without a period)."""
    h = np.asarray(history, float)
    m = period if period and period >= 2 and len(h) > period else 1
    d = np.abs(h[m:] - h[:-m])
    scale = float(np.mean(d)) if len(d) else 0.0
    return scale if scale > 0 else 1.0


def accuracy(actual, forecast, scale):
    """MAE, RMSE, MASE (MAE / scale) and sMAPE (percent, 0..200) for arrays of equal shape."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    err = a - f
    mae = float(np.mean(np.abs(err)))
    denom = np.abs(a) + np.abs(f)
    smape = float(np.mean(np.where(denom > 0, 200.0 * np.abs(err) / np.where(denom > 0, denom, 1), 0.0)))
    return {"MAE": mae, "RMSE": float(np.sqrt(np.mean(err ** 2))), "MASE": mae / scale, "sMAPE": smape}
