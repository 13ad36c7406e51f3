"""Optimizers, gradient clipping and learning-rate schedules.

An optimizer updates parameters in place from their gradients, both given as dicts by name:
`optimizer.apply(params, grads)`. The update formulas are torch.optim's, step for step, so the
two agree to rounding; names and defaults are Keras's (learning_rate, beta_1, rho, epsilon...).

    g <- clip(g)                        clipvalue: each entry into [-v, v]; clipnorm: the global norm
                                        of all gradients scaled to at most clipnorm, exactly like
                                        torch.nn.utils.clip_grad_norm_ (Keras calls this global_clipnorm)
    g <- g + weight_decay * p           L2 (SGD, RMSprop, Adam);  AdamW instead decays p directly

`learning_rate` is a float or a schedule: a callable of the step count (0 at the first update),
as in Keras. Optimizer state (moments, step count) exports as arrays plus JSON for checkpoints.
"""
import math

import numpy as np


# ----------------------------------------------------------------------------- schedules

class Schedule:
    """A learning rate as a function of the optimizer step (0, 1, 2, ...)."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        return dict(vars(self))


class StepDecay(Schedule):
    """initial_learning_rate * decay_rate ** floor(step / decay_steps) (torch's StepLR)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate=0.5):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        return self.initial_learning_rate * self.decay_rate ** (step // self.decay_steps)


class ExponentialDecay(Schedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps), floored if staircase (Keras)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p


class CosineDecay(Schedule):
    """Keras's CosineDecay: optional linear warm-up from initial_learning_rate to warmup_target
    over warmup_steps, then cosine decay over decay_steps down to alpha times the peak."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        if decay_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"decay_steps must be positive and warmup_steps >= 0, got {decay_steps}, {warmup_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.alpha = float(alpha)
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        peak = self.initial_learning_rate
        if self.warmup_target is not None:
            if step < self.warmup_steps:
                return peak + (self.warmup_target - peak) * step / self.warmup_steps
            peak, step = self.warmup_target, step - self.warmup_steps
        done = min(step, self.decay_steps) / self.decay_steps
        return peak * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * done)) + self.alpha)


SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay)}


# ----------------------------------------------------------------------------- clipping

def clip_by_global_norm(grads, max_norm):
    """Scale all gradients (dict of arrays) by min(1, max_norm / (norm + 1e-6)) like
    torch.nn.utils.clip_grad_norm_. Returns the new dict and the norm before clipping."""
    total = float(np.linalg.norm([np.linalg.norm(g.ravel()) for g in grads.values()])) if grads else 0.0
    coef = min(max_norm / (total + 1e-6), 1.0)
    return {k: g * g.dtype.type(coef) for k, g in grads.items()}, total


def clip_by_value(grads, value):
    """Each gradient entry into [-value, value] (torch.nn.utils.clip_grad_value_)."""
    return {k: np.clip(g, -value, value) for k, g in grads.items()}


# ----------------------------------------------------------------------------- optimizers

class Optimizer:
    """Base class. Subclasses name their per-parameter state arrays in `slot_names` and define
    `_update(key, p, g, lr, t)`, which changes p in place (t is the 1-based step)."""

    slot_names = ()

    def __init__(self, learning_rate=0.001, weight_decay=0.0, clipnorm=None, clipvalue=None,
                 global_clipnorm=None):
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError("give clipnorm or global_clipnorm, not both (both clip the global norm)")
        self._learning_rate = _check_learning_rate(learning_rate)
        self.weight_decay = float(weight_decay or 0.0)
        self.clipnorm = clipnorm if clipnorm is not None else global_clipnorm
        self.clipvalue = clipvalue
        self.iterations = 0                          # updates done so far
        self.slots = {name: {} for name in self.slot_names}
        self.last_grad_norm = None                   # global norm before clipping, if clipnorm

    @property
    def learning_rate(self):
        """The current learning rate (a schedule is evaluated at the current step)."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = _check_learning_rate(value)

    def apply(self, params, grads):
        """One update: params and grads are dicts name -> array of equal shapes; params change in place."""
        missing = [k for k in params if k not in grads]
        if missing:
            raise ValueError(f"no gradient for parameters {missing}")
        grads = {k: grads[k] for k in params}
        if self.clipnorm is not None:
            grads, self.last_grad_norm = clip_by_global_norm(grads, self.clipnorm)
        if self.clipvalue is not None:
            grads = clip_by_value(grads, self.clipvalue)
        lr = self.learning_rate
        self.iterations += 1
        for key, p in params.items():
            g = grads[key]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {key} has shape {g.shape}, parameter has {p.shape}")
            self._update(key, p, g, lr, self.iterations)

    def _slot(self, name, key, p):
        """The state array `name` for parameter key, created as zeros like p."""
        table = self.slots[name]
        if key not in table:
            table[key] = np.zeros_like(p)
        return table[key]

    def _l2(self, p, g):
        return g + self.weight_decay * p if self.weight_decay else g

    # --- saving

    def get_config(self):
        lr = self._learning_rate
        if isinstance(lr, Schedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        elif callable(lr):
            raise ValueError("a learning-rate function cannot be saved; use a Schedule from lstmkit.optim")
        config = {"learning_rate": lr, "weight_decay": self.weight_decay,
                  "clipnorm": self.clipnorm, "clipvalue": self.clipvalue}
        config.update(self._hyper())
        return {"class_name": type(self).__name__, "config": config}

    def get_state(self):
        """(arrays {"slot/param": array}, json {"iterations": n}) to save and restore the moments."""
        arrays = {f"{slot}/{key}": a for slot, table in self.slots.items() for key, a in table.items()}
        return arrays, {"iterations": self.iterations}

    def set_state(self, arrays, meta):
        """Restore what get_state returned."""
        slots = {name: {} for name in self.slot_names}
        for name, a in arrays.items():
            slot, _, key = name.partition("/")
            if slot not in slots:
                raise ValueError(f"{type(self).__name__} has no state {slot!r} (it keeps {list(self.slot_names)})")
            slots[slot][key] = np.array(a)
        self.slots = slots
        self.iterations = int(meta["iterations"])


def _check_learning_rate(lr):
    if callable(lr):
        return lr
    if not isinstance(lr, (int, float)) or not lr >= 0:
        raise ValueError(f"learning_rate must be a non-negative number or a schedule, got {lr!r}")
    return float(lr)


class SGD(Optimizer):
    """p -= lr * g, with momentum buffer b = momentum * b + g (b = g at the first step) and
    nesterov g + momentum * b, as torch.optim.SGD (dampening 0)."""

    slot_names = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, key, p, g, lr, t):
        g = self._l2(p, g)
        if self.momentum:
            first = key not in self.slots["momentum"]
            buf = self._slot("momentum", key, p)
            if first:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= lr * g


class RMSprop(Optimizer):
    """torch.optim.RMSprop: s = rho s + (1 - rho) g^2, p -= lr g / (sqrt(s) + epsilon), with
    optional momentum and centered (subtract the squared mean gradient)."""

    slot_names = ("square_avg", "momentum", "grad_avg")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)

    def _hyper(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered}

    def _update(self, key, p, g, lr, t):
        g = self._l2(p, g)
        s = self._slot("square_avg", key, p)
        s *= self.rho
        s += (1 - self.rho) * g * g
        if self.centered:
            m = self._slot("grad_avg", key, p)
            m += (1 - self.rho) * (g - m)
            avg = np.sqrt(s - m * m) + self.epsilon
        else:
            avg = np.sqrt(s) + self.epsilon
        if self.momentum:
            buf = self._slot("momentum", key, p)
            buf *= self.momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)


class Adam(Optimizer):
    """torch.optim.Adam: m = beta_1 m + (1 - beta_1) g, v = beta_2 v + (1 - beta_2) g^2,
    p -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)."""

    slot_names = ("m", "v")
    decoupled = False

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _hyper(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def _update(self, key, p, g, lr, t):
        if self.decoupled:
            if self.weight_decay:
                p *= 1 - lr * self.weight_decay
        else:
            g = self._l2(p, g)
        m = self._slot("m", key, p)
        v = self._slot("v", key, p)
        m += (1 - self.beta_1) * (g - m)                 # torch's lerp
        v *= self.beta_2
        v += (1 - self.beta_2) * g * g
        step_size = lr / (1 - self.beta_1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - self.beta_2 ** t) + self.epsilon
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay before
    the Adam step, as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
CLASSES = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def get(optimizer):
    """An Optimizer from an Optimizer, a name ("sgd", "rmsprop", "adam", "adamw") or get_config()."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        return OPTIMIZERS[optimizer.lower()]()
    if isinstance(optimizer, dict) and optimizer.get("class_name") in CLASSES:
        config = dict(optimizer.get("config", {}))
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            if lr.get("class_name") not in SCHEDULES:
                raise ValueError(f"unknown learning-rate schedule {lr.get('class_name')!r}")
            config["learning_rate"] = SCHEDULES[lr["class_name"]](**lr["config"])
        return CLASSES[optimizer["class_name"]](**config)
    raise ValueError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or an Optimizer, got {optimizer!r}")
