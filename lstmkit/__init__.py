"""lstmkit: LSTM networks from the equations up."""
__version__ = "0.1.0"

# Public names, imported on first use so that `import lstmkit` stays cheap.
_LAZY = {
    "Sequential": ("lstmkit.model", "Sequential"),
    "load": ("lstmkit.checkpoint", "load"),
    "load_model": ("lstmkit.checkpoint", "load_model"),
    "save_model": ("lstmkit.checkpoint", "save_model"),
    "layers": ("lstmkit.layers", None),
    "losses": ("lstmkit.losses", None),
    "metrics": ("lstmkit.metrics", None),
    "optim": ("lstmkit.optim", None),
    "optimizers": ("lstmkit.optim", None),
    "callbacks": ("lstmkit.callbacks", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


def set_num_threads(n):
    """Bound every thread pool the kernels use (BLAS and compiled code) to n threads.
    The environment variable LSTMKIT_NUM_THREADS does the same at first use of the kernels."""
    from lstmkit.kernels.threads import set_num_threads as _set
    return _set(n)
