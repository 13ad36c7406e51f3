"""Callbacks hooked into Sequential.fit, as in Keras: progress bar, history, early stopping,
checkpoints and learning-rate reduction.

Hooks (all optional): on_train_begin(logs), on_epoch_begin(epoch, logs), on_train_batch_end(batch,
logs), on_epoch_end(epoch, logs), on_train_end(logs). `epoch` counts from 0; `logs` holds running
means ("loss", metric names) and at epoch end "val_loss", "val_<metric>". A callback can stop
training with `self.model.stop_training = True`. The progress bar is the only thing in the
library that writes to the terminal.
"""
import math
import sys
import time

import numpy as np


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        """params: {"epochs", "steps", "samples", "verbose"} of the fit call."""
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """Records each epoch's logs: history.history = {"loss": [...], "val_loss": [...], ...};
    history.epoch lists the epoch indices. fit returns it."""

    def on_train_begin(self, logs=None):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_train_batch_end=None,
                 on_epoch_end=None, on_train_end=None):
        super().__init__()
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_begin", on_epoch_begin),
                         ("on_train_batch_end", on_train_batch_end), ("on_epoch_end", on_epoch_end),
                         ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


def _format_logs(logs):
    return "  ".join(f"{k} {_fmt(v)}" for k, v in logs.items() if isinstance(v, (int, float)))


def _fmt(v):
    return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"


class ProgressBar(Callback):
    """A rich progress bar per epoch: epoch and step, loss and metrics, validation loss at the
    end, samples/s and time left. Quiet (no output) when `console` is not a terminal unless
    per_epoch=True, which prints one line per epoch instead of bars (Keras's verbose=2)."""

    def __init__(self, per_epoch=False, console=None):
        super().__init__()
        self.per_epoch = per_epoch
        self.console = console

    def on_train_begin(self, logs=None):
        from rich.console import Console
        self.console = self.console or Console(file=sys.stdout)
        self.live = self.console.is_terminal and not self.per_epoch
        self.quiet = not self.live and not self.per_epoch
        self.progress = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.seen = time.perf_counter(), 0
        if not self.live:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(f"Epoch {epoch + 1}/{self.params['epochs']}",
                                           total=self.params["steps"], info="")

    def _rate(self):
        elapsed = time.perf_counter() - self.start
        return self.seen / elapsed if elapsed > 0 else 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += (logs or {}).get("size", 0)
        if self.progress is not None:
            info = f"{_format_logs({k: v for k, v in logs.items() if k != 'size'})}  {self._rate():,.0f} samples/s"
            self.progress.update(self.task, completed=batch + 1, info=info)

    def on_epoch_end(self, epoch, logs=None):
        info = f"{_format_logs(logs)}  {self._rate():,.0f} samples/s"
        if self.progress is not None:
            self.progress.update(self.task, info=info)
            self.progress.stop()
            self.progress = None
        elif self.per_epoch:
            self.console.print(f"Epoch {epoch + 1}/{self.params['epochs']}  {info}  "
                               f"{time.perf_counter() - self.start:.1f}s", highlight=False, soft_wrap=True)

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        """Stop a running bar (also called when training is interrupted)."""
        if getattr(self, "progress", None) is not None:
            self.progress.stop()
            self.progress = None


class TerminateOnNaN(Callback):
    """Stop training as soon as the loss becomes NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            self.model.stop_training = True


class _Monitor(Callback):
    """Shared by callbacks that watch one logged value and keep the best so far."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def current(self, logs):
        if self.monitor not in (logs or {}):
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, which is not among the "
                             f"logged values {sorted(logs or {})}; pass validation data to fit "
                             f"or monitor 'loss'")
        return logs[self.monitor]

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by min_delta for `patience` epochs; with
    restore_best_weights the model ends with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, None, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = self.current(logs)
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model at the end of each epoch (or only when `monitor` improves, with
    save_best_only). filepath may hold fields such as "model-{epoch:02d}.safetensors". With
    include_optimizer (the default) the file also holds the training state, so
    `lstmkit.load(path)` and `fit(..., initial_epoch=model.epoch)` resume exactly."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 include_optimizer=True, extra=None):
        super().__init__(monitor, mode, 0.0)
        self.filepath, self.save_best_only = str(filepath), save_best_only
        self.include_optimizer, self.extra = include_optimizer, extra

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            value = self.current(logs)
            if not self.improved(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        self.model.save(path, extra=self.extra, include_optimizer=self.include_optimizer)


class ReduceLROnPlateau(_Monitor):
    """Multiply the optimizer's learning rate by `factor` when `monitor` has not improved for
    `patience` epochs, then wait `cooldown` epochs; never below min_lr. Logs "learning_rate"."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor, self.patience, self.cooldown, self.min_lr = factor, int(patience), int(cooldown), min_lr

    def on_train_begin(self, logs=None):
        if callable(self.model.optimizer._learning_rate):
            raise ValueError("ReduceLROnPlateau needs a fixed learning rate, but the optimizer follows a schedule")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.cooldown_left = 0, 0

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        value = self.current(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_left <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = opt.learning_rate
                new = max(old * self.factor, self.min_lr)
                if old - new > np.finfo(np.float32).eps:
                    opt.learning_rate = new
                    self.cooldown_left, self.wait = self.cooldown, 0
        logs["learning_rate"] = opt.learning_rate
