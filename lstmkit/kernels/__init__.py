"""Fast twins of the reference cells: same functions, same signatures, same results.

`kernel_ops("lstm", "fast")` returns the compiled LSTM (`lstmkit.kernels.lstm`: lstm_forward,
lstm_backward, lstm_step), `kernel_ops("lstm", "reference")` the readable NumPy of
`lstmkit.cells.lstm`; the same for "gru" and "rnn" (the tanh RNN).
"""
import importlib

IMPLS = ("fast", "reference")
FAST = ("lstm", "gru", "rnn")   # the cells with a compiled twin


def kernel_ops(cell, impl="fast"):
    """The module implementing cell ("lstm", "gru", "rnn") for impl ("fast" or "reference")."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "fast" and cell not in FAST:
        raise ValueError(f"no fast kernel for the {cell} cell: use impl='reference'")
    return importlib.import_module(f"lstmkit.{'kernels' if impl == 'fast' else 'cells'}.{cell}")


def lstm_ops(impl="fast"):
    """The module implementing the LSTM for impl ("fast" or "reference")."""
    return kernel_ops("lstm", impl)
