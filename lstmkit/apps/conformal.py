"""Prediction intervals by split conformal prediction, and their empirical coverage.

Calibration residuals r (n_cal, H) = actual - forecast come from windows the model was not trained
on (the validation part). Each residual is divided by a per-window scale s (n_cal,) (how much the
series moves in that window's inputs; 1 when not given) and by a per-step width w_h (the RMS of the
scaled residuals at step h), so one pooled set of n_cal*H scores calibrates every step. With q the
conformal quantile of those scores (the ceil((N+1)*level)-th smallest of N), the interval for a new
window is forecast +- q * w_h * s. Under exchangeability this covers with probability >= level.
"""
import numpy as np


def conformal_quantile(scores, level):
    """The ceil((N+1)*level)-th smallest of N scores (the largest when that index exceeds N)."""
    s = np.sort(np.asarray(scores, float).ravel())
    if len(s) == 0:
        raise ValueError("conformal calibration needs at least one residual")
    k = int(np.ceil((len(s) + 1) * level))
    return float(s[min(k, len(s)) - 1])


def calibrate(residuals, scales=None, levels=(0.8, 0.95)):
    """Residuals (n_cal, H), scales (n_cal,) or None -> {"width": (H,), "q": {level: float}}.
    The half-width of the level interval for a window with scale s is q[level] * width * s."""
    r = np.asarray(residuals, float)
    s = np.ones(len(r)) if scales is None else np.asarray(scales, float)
    z = np.abs(r) / s[:, None]
    width = np.sqrt(np.mean(z ** 2, axis=0))
    width = np.maximum(np.maximum.accumulate(width), 1e-12)   # errors do not shrink with the step
    scores = z / width[None, :]
    return {"width": width, "q": {level: conformal_quantile(scores, level) for level in levels}}


def intervals(forecast, calibration, scale=1.0):
    """forecast (H,) or (B, H), scale scalar or (B,) -> {level: (lower, upper)} of forecast's shape."""
    f = np.asarray(forecast, float)
    s = np.asarray(scale, float)
    s = s[:, None] if s.ndim == 1 and f.ndim == 2 else s
    out = {}
    for level, q in calibration["q"].items():
        half = q * calibration["width"] * s
        out[level] = (f - half, f + half)
    return out


def coverage(actual, lower, upper):
    """Fraction of actual values inside [lower, upper] (arrays of one shape)."""
    a = np.asarray(actual, float)
    return float(np.mean((a >= lower) & (a <= upper)))
