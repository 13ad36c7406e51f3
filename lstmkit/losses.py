"""Losses: a scalar mean over the batch (and time) and its gradient with respect to the prediction.

Each loss is an object: `forward(y_pred, y_true, mask=None)` returns the mean loss (a float) and
keeps what `backward()` needs; `backward()` returns dL/dy_pred with y_pred's shape. A mask
(batch, time) of booleans, as made by Masking or Embedding(mask_zero=True), drops padded steps
from the mean, as Keras does.

    y_pred (B, ..., C) and y_true of the same shape         MSE, MAE, Huber, CategoricalCrossentropy
    y_pred (B, C) or (B, T, C) and int y_true (B,) / (B, T)  SparseCategoricalCrossentropy

Regression targets whose shape lacks y_pred's trailing axis of size 1 (y (B,) for outputs (B, 1))
are reshaped to match, like Keras.
"""
import numpy as np

EPSILON = 1e-7   # Keras's clip for probabilities when from_logits=False


def log_softmax(z):
    """Stable log-softmax over the last axis."""
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


class Loss:
    """Base class: subclasses define forward(y_pred, y_true, mask=None) -> mean loss (float),
    keeping what backward() -> dL/dy_pred (y_pred's shape) needs."""

    name = "loss"

    def __init__(self):
        self._cache = None

    def get_config(self):
        return {}

    def __call__(self, y_pred, y_true, mask=None):
        return self.forward(y_pred, y_true, mask)

    def _weights(self, values, mask):
        """Weights of values' shape that turn a sum into the mean, over unmasked steps only.

        mask (B, T) applies when values is (B, T, ...); otherwise every entry counts equally."""
        if mask is None or np.shape(mask) != values.shape[:2] or values.ndim < 2:
            return np.full(values.shape, 1.0 / max(values.size, 1), values.dtype)
        m = np.asarray(mask, values.dtype).reshape(values.shape[:2] + (1,) * (values.ndim - 2))
        per_step = values[0, 0].size if values.ndim > 2 else 1
        return np.broadcast_to(m / max(float(m.sum()) * per_step, 1.0), values.shape)


class _Regression(Loss):
    """Element-wise regression losses: the mean of elementwise(d) over every element of
    d = y_pred - y_true (only unmasked time steps count); subclasses give elementwise and its
    derivative."""

    def forward(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred)
        y_true = match_target(y_pred, y_true)
        diff = y_pred - y_true
        w = self._weights(diff, mask)
        self._cache = (diff, w)
        return float(np.sum(self.elementwise(diff) * w))

    def backward(self):
        diff, w = self._cache
        return self.derivative(diff) * w


class MeanSquaredError(_Regression):
    """mean((y_pred - y_true)^2), like torch.nn.MSELoss and Keras's "mse"."""

    name = "mse"

    def elementwise(self, d):
        return d * d

    def derivative(self, d):
        return 2 * d


class MeanAbsoluteError(_Regression):
    """mean(|y_pred - y_true|); the gradient at 0 is 0 (sign), as in torch."""

    name = "mae"

    def elementwise(self, d):
        return np.abs(d)

    def derivative(self, d):
        return np.sign(d)


class Huber(_Regression):
    """0.5 d^2 where |d| <= delta, else delta (|d| - 0.5 delta); Keras's and torch's HuberLoss."""

    name = "huber"

    def __init__(self, delta=1.0):
        super().__init__()
        if not delta > 0:
            raise ValueError(f"Huber delta must be positive, got {delta}")
        self.delta = float(delta)

    def get_config(self):
        return {"delta": self.delta}

    def elementwise(self, d):
        a = np.abs(d)
        return np.where(a <= self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))

    def derivative(self, d):
        return np.clip(d, -self.delta, self.delta)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class targets: y_pred (B, C) or (B, T, C), y_true (B,) or (B, T).

    from_logits=True (default) takes raw scores and uses a stable log-softmax, matching
    torch.nn.CrossEntropyLoss; from_logits=False takes probabilities (a softmax output), clipped
    to [1e-7, 1 - 1e-7] as Keras does.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=True):
        super().__init__()
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def forward(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred)
        labels = check_labels(y_pred, y_true)
        onehot = np.zeros_like(y_pred)
        np.put_along_axis(onehot, labels[..., None], 1.0, axis=-1)
        return self._forward_onehot(y_pred, onehot, mask)

    def _forward_onehot(self, y_pred, onehot, mask):
        if self.from_logits:
            logp = log_softmax(y_pred)
        else:
            logp = np.log(np.clip(y_pred, EPSILON, 1 - EPSILON))
        per_item = -np.sum(onehot * logp, axis=-1)
        w = self._weights(per_item, mask)
        self._cache = (y_pred, onehot, logp, w)
        return float(np.sum(per_item * w))

    def backward(self):
        y_pred, onehot, logp, w = self._cache
        if self.from_logits:
            grad = np.exp(logp) * onehot.sum(-1, keepdims=True) - onehot   # softmax - target
        else:
            inside = (y_pred > EPSILON) & (y_pred < 1 - EPSILON)
            grad = -onehot / np.clip(y_pred, EPSILON, 1 - EPSILON) * inside
        return grad * w[..., None]


class CategoricalCrossentropy(SparseCategoricalCrossentropy):
    """Cross-entropy with one-hot (or soft) targets of y_pred's shape (B, C) or (B, T, C)."""

    name = "categorical_crossentropy"

    def forward(self, y_pred, y_true, mask=None):
        y_pred = np.asarray(y_pred)
        y_true = np.asarray(y_true)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"categorical_crossentropy needs targets of the prediction's shape "
                             f"{y_pred.shape} (one-hot), got {y_true.shape}; for integer class "
                             f"labels use sparse_categorical_crossentropy")
        return self._forward_onehot(y_pred, y_true.astype(y_pred.dtype), mask)


def match_target(y_pred, y_true):
    """y_true as a float array of y_pred's shape, or a ValueError naming the shape expected."""
    y_true = np.asarray(y_true)
    if not np.issubdtype(y_true.dtype, np.number) and y_true.dtype != bool:
        raise ValueError(f"targets must be numbers, got dtype {y_true.dtype}")
    if y_true.shape != y_pred.shape:
        if y_true.size == y_pred.size and y_pred.shape[-1:] == (1,) and y_true.shape == y_pred.shape[:-1]:
            y_true = y_true.reshape(y_pred.shape)
        else:
            raise ValueError(f"targets have shape {y_true.shape} but the model outputs "
                             f"{y_pred.shape}; targets must have the output's shape")
    return y_true.astype(y_pred.dtype, copy=False)


def check_labels(y_pred, y_true):
    """Integer class labels of shape y_pred.shape[:-1] within [0, C), or a ValueError."""
    y_true = np.asarray(y_true)
    expected = y_pred.shape[:-1]
    if y_true.shape == expected + (1,):
        y_true = y_true.reshape(expected)
    if y_true.shape != expected:
        raise ValueError(f"sparse_categorical_crossentropy needs integer labels of shape {expected} "
                         f"for predictions {y_pred.shape}, got {y_true.shape}")
    if y_true.dtype.kind not in "iu":
        if y_true.dtype.kind == "f" and np.all(np.mod(y_true, 1) == 0):
            y_true = y_true.astype(np.int64)
        else:
            raise ValueError(f"sparse_categorical_crossentropy needs integer class labels, got dtype {y_true.dtype}")
    C = y_pred.shape[-1]
    if y_true.size and (y_true.min() < 0 or y_true.max() >= C):
        raise ValueError(f"class labels must lie in [0, {C - 1}] for {C} classes, "
                         f"got values from {y_true.min()} to {y_true.max()}")
    return y_true.astype(np.int64, copy=False)


LOSSES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
}
CLASSES = {cls.__name__: cls for cls in (MeanSquaredError, MeanAbsoluteError, Huber,
                                         SparseCategoricalCrossentropy, CategoricalCrossentropy)}


def get(loss):
    """A Loss from a Loss object, a name such as "mse", or a {"class_name", "config"} dict."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.lower()
        if key not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(sorted(LOSSES))}")
        return LOSSES[key]()
    if isinstance(loss, dict) and loss.get("class_name") in CLASSES:
        return CLASSES[loss["class_name"]](**loss.get("config", {}))
    raise ValueError(f"loss must be a name ({', '.join(sorted(LOSSES))}) or a Loss, got {loss!r}")


def serialize(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
