"""One thread setting for every pool the kernels use.

The compiled loops run on the calling thread (no Numba parallel pool is started); all other
threads are BLAS threads: SciPy's OpenBLAS, which the compiled gemm calls, and NumPy's own
OpenBLAS. `set_num_threads(n)` bounds both (through threadpoolctl), so n threads is n threads.
`LSTMKIT_NUM_THREADS` does the same when the kernels are first imported.

Inside that bound the kernels choose per product: the large products (input projection, weight
gradients) use all n threads, while the per-step products of small shapes use one, because
waking and joining a BLAS thread every time step costs more than it saves (and is ruinous when
other processes share the cores).
"""
import os

_bound = None      # the n of set_num_threads, or None for the BLAS default
_limits = None     # the threadpoolctl limiter in force, kept so the setting lasts
_gemm_blas = None  # threadpoolctl controllers of the BLAS behind the compiled gemm
_current = None    # thread count last given to _gemm_blas


def set_num_threads(n):
    """Use at most n threads in every kernel (BLAS and compiled code). n >= 1."""
    global _bound, _limits, _current
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  load the BLAS the compiled gemm uses, so it is bound too
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    _bound, _current = n, n
    return n


def get_num_threads():
    """The thread bound in force."""
    return _bound if _bound is not None else max(c.num_threads for c in _controllers())


def _controllers():
    """The BLAS libraries that scipy.linalg.cython_blas (hence the compiled gemm) may use."""
    global _gemm_blas
    if _gemm_blas is None:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController
        blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        scipy_own = [c for c in blas if "scipy" in c.filepath and "numpy" not in c.filepath]
        _gemm_blas = scipy_own or blas
    return _gemm_blas


def gemm_threads(k=None):
    """Let the compiled gemm use min(k, bound) threads (all of the bound when k is None)."""
    global _current
    n = get_num_threads() if k is None else min(k, get_num_threads())
    if n != _current:
        for c in _controllers():
            c.set_num_threads(n)
        _current = n


def step_threads(flops):
    """Threads for a per-step product of `flops` floating-point operations: one below 8 MFLOP."""
    return 1 if flops < 8e6 else None


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
