"""Metrics: running averages over an epoch, reported beside the loss (Keras's `metrics=[...]`).

A metric accumulates with `update(y_pred, y_true, mask=None)` and reports `result()`; `reset()`
starts a new epoch. Shapes follow the losses: y_pred (B, C) or (B, T, C) with integer labels for
accuracy and perplexity, any matching shapes for mae and rmse.
"""
import numpy as np

from .losses import check_labels, log_softmax, match_target, EPSILON


class Metric:
    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0.0

    def _add(self, values, mask):
        """Add per-item values, leaving out masked (False) time steps when mask fits values."""
        values = np.asarray(values, np.float64)
        if mask is not None and values.ndim >= 2 and np.shape(mask) == values.shape[:2]:
            m = np.asarray(mask, np.float64).reshape(values.shape[:2] + (1,) * (values.ndim - 2))
            m = np.broadcast_to(m, values.shape)
            self.total += float(np.sum(values * m))
            self.count += float(np.sum(m))
        else:
            self.total += float(np.sum(values))
            self.count += values.size

    def result(self):
        return self.total / self.count if self.count else 0.0


class Accuracy(Metric):
    """Fraction of correct classes: argmax of y_pred (B, [T,] C) against integer labels, one-hot
    targets of y_pred's shape, or for one output unit (B, 1) a 0.5 threshold against 0/1 targets."""

    name = "accuracy"

    def update(self, y_pred, y_true, mask=None):
        y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
        if y_pred.shape[-1] == 1:
            correct = (y_pred > 0.5) == (match_target(y_pred, y_true) > 0.5)
        elif y_true.shape == y_pred.shape:
            correct = np.argmax(y_pred, -1) == np.argmax(y_true, -1)
        else:
            correct = np.argmax(y_pred, -1) == check_labels(y_pred, y_true)
        self._add(correct, mask)


class Perplexity(Metric):
    """exp(mean cross-entropy per token) with integer labels; from_logits as in the loss."""

    name = "perplexity"

    def __init__(self, from_logits=True):
        self.from_logits = from_logits
        super().__init__()

    def update(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred, np.float64)
        labels = check_labels(y_pred, y_true)
        if self.from_logits:
            logp = log_softmax(y_pred)
        else:
            logp = np.log(np.clip(y_pred, EPSILON, 1 - EPSILON))
        self._add(-np.take_along_axis(logp, labels[..., None], -1)[..., 0], mask)

    def result(self):
        return float(np.exp(super().result())) if self.count else 0.0


class MAE(Metric):
    """Mean absolute error."""

    name = "mae"

    def update(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred)
        self._add(np.abs(y_pred - match_target(y_pred, y_true)), mask)


class RMSE(Metric):
    """Root of the mean squared error over the epoch."""

    name = "rmse"

    def update(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred)
        self._add((y_pred - match_target(y_pred, y_true)) ** 2, mask)

    def result(self):
        return float(np.sqrt(super().result()))


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "perplexity": Perplexity,
           "mae": MAE, "mean_absolute_error": MAE, "rmse": RMSE,
           "root_mean_squared_error": RMSE}


def get(metric, loss=None):
    """A Metric from a name or a Metric; perplexity takes from_logits from a cross-entropy loss."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric.lower() in METRICS:
        cls = METRICS[metric.lower()]
        if cls is Perplexity:
            return Perplexity(from_logits=getattr(loss, "from_logits", True))
        m = cls()
        if metric.lower() == "acc":
            m.name = "acc"
        return m
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(sorted(METRICS))}")
