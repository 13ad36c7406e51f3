"""One thread setting for every pool the kernels use.

The compiled loops run on the calling thread (no Numba parallel pool is started); all their
threads are BLAS threads: SciPy's OpenBLAS, which the compiled gemm calls, and NumPy's own
OpenBLAS. `set_num_threads(n)` bounds both (through threadpoolctl), so n threads is n threads.
`LSTMKIT_NUM_THREADS` does the same when the kernels are first imported.
"""
import os

_limits = None   # the threadpoolctl limiter in force, kept so the setting lasts


def set_num_threads(n):
    """Use at most n threads in every kernel (BLAS and compiled code). n >= 1."""
    global _limits
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  load the BLAS the compiled gemm uses, so it is bound too
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    return n


def get_num_threads():
    """The thread bound in force: the smallest BLAS pool size."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info
    sizes = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return min(sizes) if sizes else 1


def apply_env():
    """Apply LSTMKIT_NUM_THREADS if it is set (called when the kernels are imported)."""
    value = os.environ.get("LSTMKIT_NUM_THREADS")
    if not value:
        return
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"LSTMKIT_NUM_THREADS must be a positive integer, got {value!r}") from None
    set_num_threads(n)
