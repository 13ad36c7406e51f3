"""Sequential: a stack of layers with Keras's compile / fit / evaluate / predict.

    model = Sequential([Embedding(1000, 64), LSTM(128), Dense(1000)], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=32, validation_split=0.1)

Inputs are batch-first arrays: x (batch, time, features) for a recurrent first layer, integer ids
(batch, time) for an Embedding, (batch, features) for Dense. The model is built from the first
input it sees (or `build(input_shape)`); all randomness (initial weights, shuffling, dropout)
comes from one numpy Generator seeded by `seed`, so the same seed gives the same numbers.
Inputs and targets are checked before any weight changes; a mismatch is a ValueError naming the
shape or dtype the model expects.
"""
import copy
import math

import numpy as np

from . import losses, metrics as metrics_mod, optim
from .callbacks import Callback, History, ProgressBar
from .layers.base import Layer


class Sequential:
    def __init__(self, layers=None, seed=None, name="sequential", input_shape=None):
        self.name = name
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.layers = []
        self.built = False
        self.input_shape = self.output_shape = None   # with None for the batch axis
        self.optimizer = self.loss = None
        self.metrics = []
        self.stop_training = False
        self.epoch = 0              # epochs trained so far (fit's initial_epoch to resume)
        self.history = None
        self.extra = None           # the extra metadata of a loaded model
        for layer in layers or []:
            self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    # ------------------------------------------------------------------ structure

    def add(self, layer):
        """Append a layer; a clashing name gets a suffix (lstm, lstm_1, ...) like Keras."""
        if not isinstance(layer, Layer):
            raise ValueError(f"Sequential takes lstmkit layers, got {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add layers to a built model; add them all before fit or build")
        names = {l.name for l in self.layers}
        base, k = layer.name, 1
        while layer.name in names:
            layer.name = f"{base}_{k}"
            k += 1
        self.layers.append(layer)

    def build(self, input_shape):
        """Create every layer's weights for inputs of shape (batch, *input_shape)."""
        if not self.layers:
            raise ValueError("the model has no layers: add some before building or fitting it")
        shape = tuple(input_shape)
        for k, layer in enumerate(self.layers):
            if not layer.built:
                layer.build(shape, self.rng)
            shape = layer.output_shape(shape)
            if isinstance(shape, list):
                raise ValueError(f"{layer.name} returns several outputs (return_state=True), which "
                                 f"Sequential cannot pass on: call that layer directly instead")
        self.input_shape = (None,) + tuple(input_shape)
        self.output_shape = (None,) + tuple(shape)
        self.built = True

    def _output_shape_for(self, sample_shape):
        shape = tuple(sample_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def _is_embedding_input(self):
        return type(self.layers[0]).__name__ == "Embedding"

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer (name or Optimizer), loss (name or Loss) and metrics (names).

        Cross-entropy given by name reads logits, or probabilities when the last layer is a
        softmax; a Loss object says which with from_logits."""
        if loss is None:
            raise ValueError(f"compile needs a loss, one of {', '.join(sorted(losses.LOSSES))}")
        self.optimizer = optim.get(optimizer)
        self.loss = losses.get(loss)
        ends_in_softmax = bool(self.layers) and getattr(self.layers[-1], "activation", None) == "softmax"
        if ends_in_softmax and getattr(self.loss, "from_logits", False):
            if not isinstance(loss, str):
                raise ValueError(f"the model ends in a softmax but {self.loss.name} was given "
                                 f"from_logits=True: pass from_logits=False or drop the activation")
            self.loss.from_logits = False   # a name follows the model, as Keras's default does
        self.metrics = list(metrics or [])
        for m in self.metrics:          # fail now, not mid-fit
            metrics_mod.get(m, self.loss)

    def _new_metrics(self):
        return [copy.deepcopy(m) if isinstance(m, metrics_mod.Metric) else metrics_mod.get(m, self.loss)
                for m in self.metrics]

    # ------------------------------------------------------------------ checks

    def _expected_input(self):
        dims = self.input_shape[1:]
        if self._is_embedding_input():
            return "(batch, time) integer token ids"
        names = ["time" if (k == 0 and len(dims) > 1) else str(d) for k, d in enumerate(dims)]
        return "(batch, " + ", ".join(names) + ")"

    def _check_x(self, x):
        """x as an array that fits the model (building it on first use), or a ValueError."""
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"x must be an array with a batch axis and at least one sample, got shape {x.shape}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"x must hold numbers, got dtype {x.dtype}")
        if not self.built:
            self.build(x.shape[1:])
        dims = self.input_shape[1:]
        ok = x.ndim == len(dims) + 1
        if ok and not self._is_embedding_input() and dims[-1] is not None:
            ok = x.shape[-1] == dims[-1]
        if ok and len(dims) > 1:
            ok = all(a == b or b is None for a, b in zip(x.shape[2:], dims[1:]))
        if not ok:
            raise ValueError(f"the model expects x of shape {self._expected_input()}, got {x.shape}")
        if self._is_embedding_input():
            if x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
                raise ValueError(f"the model starts with an Embedding and expects integer token ids "
                                 f"{self._expected_input()}, got non-integer {x.dtype} values")
        elif x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values: fill or drop missing data first")
        return x

    def _check_y(self, x, y):
        """y as an array that fits the model's outputs for x and the loss, or a ValueError."""
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0] if y.ndim else 'no batch axis'}")
        out = self._output_shape_for(x.shape[1:])
        batch = lambda dims: "(batch" + ("".join(f", {d}" for d in dims) if dims else ",") + ")"
        if type(self.loss) is losses.SparseCategoricalCrossentropy:
            want = tuple(out[:-1])
            if y.shape[1:] not in (want, want + (1,)) or y.dtype.kind not in "iuf" or (
                    y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
                raise ValueError(f"{self.loss.name} expects y as integer class ids of shape {batch(want)} "
                                 f"for model outputs {batch(out)}, got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= out[-1]):
                raise ValueError(f"class ids in y must lie in [0, {out[-1] - 1}] for the model's "
                                 f"{out[-1]} outputs, got values in [{y.min()}, {y.max()}]")
            return y.reshape(y.shape[:1] + want).astype(np.int64)
        if y.shape[1:] != tuple(out) and not (out[-1:] == (1,) and y.shape[1:] == tuple(out[:-1])):
            raise ValueError(f"{self.loss.name} expects y of the model's output shape {batch(out)}, got {y.shape}")
        if y.dtype.kind not in "biuf":
            raise ValueError(f"y must hold numbers, got dtype {y.dtype}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values: fill or drop missing data first")
        return y

    def _require_compiled(self):
        if self.optimizer is None or self.loss is None:
            raise ValueError("compile the model first: model.compile(optimizer=..., loss=...)")

    # ------------------------------------------------------------------ computation

    def _forward(self, x, training):
        mask = None
        for layer in self.layers:
            out = layer.forward(x, training=training, mask=mask)
            mask = layer.compute_mask(x, mask)
            x = out
        return x, mask

    def __call__(self, x, training=False):
        """The output for x (batch, ...) in one pass, without batching."""
        return self._forward(self._check_x(x), training)[0]

    def _train_step(self, x, y):
        out, mask = self._forward(x, training=True)
        loss = self.loss.forward(out, y, mask)
        d = self.loss.backward()
        for layer in reversed(self.layers):
            d = layer.backward(d)
        self.optimizer.apply(self.trainable_params(), self.gradients())
        return loss, out, mask

    def trainable_params(self):
        """{"layer/param": array} of every parameter (the arrays themselves, updated in place)."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.params.items()}

    def gradients(self):
        """{"layer/param": gradient} from the last backward pass."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.grads.items()}

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on one batch; returns the loss (or a dict with the metrics)."""
        self._require_compiled()
        x = self._check_x(x)
        y = self._check_y(x, y)
        loss, out, mask = self._train_step(x, y)
        logs = {"loss": loss}
        for m in self._new_metrics():
            m.update(out, y, mask)
            logs[m.name] = m.result()
        return logs if return_dict else loss

    def fit(self, x, y, batch_size=32, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0):
        """Train for epochs - initial_epoch epochs of mini-batches; returns a History whose
        .history maps "loss", metric names and "val_..." to per-epoch lists.

        verbose: "auto"/1 a progress bar on a terminal, 2 one line per epoch, 0 nothing.
        validation_split takes the last fraction of x, y (before shuffling), like Keras."""
        self._require_compiled()
        x, y, val = self._fit_data(x, y, validation_split, validation_data)
        batch_size = _check_batch_size(batch_size)
        if int(epochs) < 1 or not 0 <= int(initial_epoch) <= int(epochs):
            raise ValueError(f"need epochs >= 1 and 0 <= initial_epoch <= epochs, got {epochs}, {initial_epoch}")
        history = History()
        cbs = list(callbacks or [])
        if verbose == 2 or verbose in ("auto", 1, True):
            cbs.append(ProgressBar(per_epoch=verbose == 2))
        cbs.append(history)                 # last, so it records what other callbacks log
        params = {"epochs": int(epochs), "steps": math.ceil(len(x) / batch_size), "samples": len(x),
                  "verbose": verbose}
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be lstmkit.callbacks.Callback objects, got {type(cb).__name__}")
            cb.set_model(self)
            cb.set_params(params)
        self.stop_training = False
        self.history = history
        try:
            for cb in cbs:
                cb.on_train_begin({})
            for epoch in range(int(initial_epoch), int(epochs)):
                for cb in cbs:
                    cb.on_epoch_begin(epoch, {})
                logs = self._train_epoch(x, y, batch_size, shuffle, cbs)
                if val is not None:
                    vlogs = self.evaluate(val[0], val[1], batch_size=batch_size, return_dict=True)
                    logs.update({f"val_{k}": v for k, v in vlogs.items()})
                self.epoch = epoch + 1
                for cb in cbs:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            for cb in cbs:
                cb.on_train_end({})
        finally:
            for cb in cbs:
                if isinstance(cb, ProgressBar):
                    cb.close()               # leave the terminal tidy, even on Ctrl-C
        return history

    def _fit_data(self, x, y, validation_split, validation_data):
        """Checked training arrays and the validation pair (or None)."""
        x = self._check_x(x)
        y = self._check_y(x, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            xv = self._check_x(validation_data[0])
            return x, y, (xv, self._check_y(xv, validation_data[1]))
        if not validation_split:
            return x, y, None
        if not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be between 0 and 1, got {validation_split}")
        split = int(math.floor(len(x) * (1 - validation_split)))
        if split in (0, len(x)):
            raise ValueError(f"validation_split={validation_split} of {len(x)} samples leaves an empty "
                             f"training or validation set")
        return x[:split], y[:split], (x[split:], y[split:])

    def _train_epoch(self, x, y, batch_size, shuffle, cbs):
        """One pass over x, y in mini-batches (shuffled with the model's generator); returns the
        epoch's logs: mean loss and metrics."""
        n = len(x)
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        mets = self._new_metrics()
        total = seen = 0
        for step, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            xb, yb = (x[idx], y[idx]) if shuffle else (x[start:start + batch_size], y[start:start + batch_size])
            loss, out, mask = self._train_step(xb, yb)
            total += loss * len(idx)
            seen += len(idx)
            for m in mets:
                m.update(out, yb, mask)
            logs = {"loss": total / seen, **{m.name: m.result() for m in mets}, "size": len(idx)}
            for cb in cbs:
                cb.on_train_batch_end(step, logs)
            if self.stop_training:
                break
        return {"loss": total / seen, **{m.name: m.result() for m in mets}}

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False):
        """Mean loss (and metrics) over x, y without training: the loss alone, a list
        [loss, *metrics] when metrics were compiled, or a dict with return_dict."""
        self._require_compiled()
        x = self._check_x(x)
        y = self._check_y(x, y)
        batch_size = _check_batch_size(batch_size)
        mets = self._new_metrics()
        total = 0.0
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            out, mask = self._forward(xb, training=False)
            total += self.loss.forward(out, yb, mask) * len(xb)
            for m in mets:
                m.update(out, yb, mask)
        results = {"loss": total / len(x), **{m.name: m.result() for m in mets}}
        if return_dict:
            return results
        return results["loss"] if len(results) == 1 else list(results.values())

    def predict(self, x, batch_size=32, verbose=0):
        """Outputs (batch, *output_shape) for x, computed batch_size samples at a time."""
        x = self._check_x(x)
        batch_size = _check_batch_size(batch_size)
        outs = [self._forward(x[s:s + batch_size], training=False)[0] for s in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    def reset_states(self):
        """Forget the carried states of stateful recurrent layers."""
        for layer in self.layers:
            layer.reset_states()

    # ------------------------------------------------------------------ weights and saving

    def get_weights(self):
        """Every layer's weights, in order, as one list of arrays (copies)."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Set all weights from a list like get_weights() returns; checks every shape first."""
        self._require_built()
        weights = list(weights)
        expected = [p.shape for layer in self.layers for p in layer.params.values()]
        if len(weights) != len(expected):
            raise ValueError(f"the model has {len(expected)} weight arrays, got {len(weights)}")
        for k, (w, shape) in enumerate(zip(weights, expected)):
            if np.shape(w) != shape:
                raise ValueError(f"weight {k} must have shape {shape}, got {np.shape(w)}")
        k = 0
        for layer in self.layers:
            n = len(layer.params)
            layer.set_weights(weights[k:k + n])
            k += n

    def count_params(self):
        self._require_built()
        return int(sum(p.size for layer in self.layers for p in layer.params.values()))

    def _require_built(self):
        if not self.built:
            raise ValueError("the model is not built yet: call build(input_shape) or fit/predict it first")

    def save(self, path, extra=None, include_optimizer=True):
        """Write the model (and, if compiled and include_optimizer, its training state) to path:
        a safetensors file with JSON metadata; see lstmkit.checkpoint."""
        from .checkpoint import save_model
        save_model(self, path, extra=extra, include_optimizer=include_optimizer)

    def summary(self, print_fn=None):
        """The layer table as Keras prints it (name (type), output shape, parameter count, totals),
        returned as a string; print_fn(text) is called with it if given."""
        self._require_built()
        text = render_summary(self)
        if print_fn is not None:
            print_fn(text)
        return text


def _check_batch_size(batch_size):
    if batch_size is None:
        return 32
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _memory(nbytes):
    """Keras's readable size: 40.82 KB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024


def render_summary(model):
    """Keras's model.summary() table as plain text."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.HEAVY_HEAD, show_lines=True, title_justify="left")
    table.add_column("Layer (type)", no_wrap=True, min_width=31)
    table.add_column("Output Shape", no_wrap=True, min_width=22)
    table.add_column("Param #", justify="right", no_wrap=True, min_width=13)
    shape = model.input_shape[1:]
    total = nbytes = 0
    for layer in model.layers:
        shape = layer.output_shape(shape)
        n = sum(p.size for p in layer.params.values())
        total += n
        nbytes += sum(p.nbytes for p in layer.params.values())
        table.add_row(f"{layer.name} ({type(layer).__name__})", str((None,) + tuple(shape)), f"{n:,}")
    buf = io.StringIO()
    console = Console(file=buf, width=98, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(f'Model: "{model.name}"', highlight=False)
    console.print(table)
    for label, n, b in (("Total", total, nbytes), ("Trainable", total, nbytes), ("Non-trainable", 0, 0)):
        console.print(f" {label} params: {n:,} ({_memory(b)})", highlight=False)
    return buf.getvalue()
