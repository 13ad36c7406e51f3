"""Fast twins of the reference cells: same functions, same signatures, same results.

`lstm_ops("fast")` returns the compiled kernels, `lstm_ops("reference")` the readable NumPy of
`lstmkit.cells.lstm`; both provide lstm_forward, lstm_backward and lstm_step.
"""
import importlib

IMPLS = ("fast", "reference")


def lstm_ops(impl="fast"):
    """The module implementing the LSTM for impl ("fast" or "reference")."""
    if impl == "reference":
        return importlib.import_module("lstmkit.cells.lstm")
    if impl == "fast":
        return importlib.import_module("lstmkit.kernels.lstm")
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
