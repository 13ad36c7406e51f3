"""One thread setting for every pool the kernels use.

Three pools could run kernel work: SciPy's OpenBLAS (which the compiled gemm calls), NumPy's
OpenBLAS and Numba's threads. `set_num_threads(n)` bounds all three (BLAS through threadpoolctl,
Numba through numba.set_num_threads), so n threads is n threads. `LSTMKIT_NUM_THREADS` does the same when the kernels are first imported.

Inside that bound the kernels make their threads with Numba only: the large products (input
projection, weight gradients) are cut into n blocks, one single-threaded BLAS call per Numba
thread (`core.gemm_parallel`), and the recurrence is cut by batch rows (`lstm._forward_split`)
when there is enough work; the rest runs on the calling thread. The BLAS behind the compiled
gemm is kept at one thread (`blas_single`).
"""
import os

_bound = None      # the n of set_num_threads, or None for the BLAS default
_limits = None     # the threadpoolctl limiter in force, kept so the setting lasts
_gemm_blas = None  # threadpoolctl controllers of the BLAS behind the compiled gemm
_single = False    # whether _gemm_blas has been set to one thread since the last set_num_threads
_parallel_pid = None  # the process that started Numba's thread pool


def set_num_threads(n):
    """Use at most n threads in every kernel (BLAS and compiled code). n >= 1."""
    global _bound, _limits, _single
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  load the BLAS the compiled gemm uses, so it is bound too
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    _bound, _single = n, False
    return n


def get_num_threads():
    """The thread bound in force: set_num_threads's n, else the BLAS pool size at first use."""
    global _bound
    if _bound is None:
        _bound = max(c.num_threads for c in _controllers())
    return _bound


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


def blas_single():
    """Run the BLAS behind the compiled gemm on one thread: the kernels make their threads with
    Numba (`core.gemm_parallel`), whose idle threads sleep, where OpenBLAS's spin for ~0.1 s after
    every call, stealing the core the serial time loop runs on (20x slower at small shapes on a
    busy machine). The setting stays: later SciPy BLAS calls in the process run single-threaded."""
    global _single
    if not _single:
        get_num_threads()                       # read the bound before changing the pool
        for c in _controllers():
            c.set_num_threads(1)
        _single = True


def parallel_threads():
    """How many threads a parallel kernel may use now: the bound, but 1 in a process forked after
    Numba's OpenMP pool started (GNU OpenMP hangs in such a child)."""
    global _parallel_pid
    n = get_num_threads()
    if n == 1:
        return 1
    if _parallel_pid is None:
        _parallel_pid = os.getpid()
    return n if _parallel_pid == os.getpid() else 1


def compiled_threads():
    """Give Numba's parallel loops the bound (called before a kernel that uses them)."""
    import numba
    n = min(get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


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
