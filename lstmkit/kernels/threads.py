"""One thread setting for every thread the kernels use.

The kernels' threads are their own small pool of Python threads running compiled code that
releases the GIL (`run_parallel`). A kernel call starts one compiled function per thread, once
(`common.forward_on_threads`, `common.backward_on_threads`): each takes its share of the large
products and its own batch rows of the recurrence, and they meet at a spinning barrier
(`core.barrier`) only where one needs what another computed. `set_num_threads(n)` bounds that pool (n - 1 threads plus
the caller) and, through threadpoolctl, NumPy's and SciPy's OpenBLAS, so n threads is n threads.
`LSTMKIT_NUM_THREADS` does the same when the kernels are first imported.

Why not OpenBLAS's threads: they spin for up to ~0.1 s after every call, taking the cores the
kernels run on. Once the kernels have run, every BLAS in the process (`blas_single`) runs on one
thread: SciPy's, behind the compiled gemm, and NumPy's, behind the Dense layers' products, whose
spinning threads made a char model's training step 1.5x slower (150 ms against 100 at batch 32,
2 x 256). Why not Numba's parallel loops: a function first compiled inside a prange body is cached
in a form that crashes a later process calling it from Python, and GNU OpenMP hangs in forked
children; idle pool threads here sleep on a queue.
"""
import os
import threading

_bound = None      # the n of set_num_threads, or None for the BLAS default
_limits = None     # the threadpoolctl limiter in force, kept so the setting lasts
_blas = None       # threadpoolctl controllers of every BLAS library loaded in the process
_single = False    # whether _blas has been set to one thread since the last set_num_threads
_pool = None       # the kernel threads (bound - 1 of them; the caller's thread runs a share too)
_pool_pid = None   # the process that made _pool
_pool_size = 0     # its number of threads
_submit = threading.Lock()   # one caller's jobs enter the pool's queue together


def _after_fork():
    global _submit
    _submit = threading.Lock()   # a fork while another thread held it would leave it held forever


os.register_at_fork(after_in_child=_after_fork)


def set_num_threads(n):
    """Use at most n threads in every kernel (BLAS and compiled code). n >= 1."""
    global _bound, _limits, _single, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    import scipy.linalg.cython_blas  # noqa: F401  load the BLAS the compiled gemm uses, so it is bound too
    from threadpoolctl import threadpool_limits
    _limits = threadpool_limits(limits=n, user_api="blas")
    _bound, _single = n, False
    with _submit:
        if _pool is not None:       # a new pool of the new size at next use
            _pool.shutdown(wait=False)
            _pool = None
    return n


def get_num_threads():
    """The thread bound in force: set_num_threads's n, else the BLAS pool size at first use."""
    global _bound
    if _bound is None:
        _bound = max(c.num_threads for c in _controllers())
    return _bound


def _controllers():
    """The BLAS libraries of the process: SciPy's (behind the compiled gemm) and NumPy's."""
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController
        _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _blas


def blas_single():
    """Run every BLAS on one thread, the kernels' threads being the only ones: OpenBLAS's spin for
    ~0.1 s after every call, stealing the cores the kernels run on (1.5x slower training with the
    Dense layers' NumPy products in between, 20x at small shapes on a busy machine). The setting
    stays until the next set_num_threads: NumPy and SciPy products in the process run
    single-threaded."""
    global _single
    if not _single:
        get_num_threads()                       # read the bound before changing the pools
        for c in _controllers():
            c.set_num_threads(1)
        _single = True


def run_parallel(fn, jobs, sync=None):
    """Run fn(*args) for every args in jobs side by side: the first on the calling thread, the
    others on the kernel thread pool (at most bound - 1 threads). The compiled kernels release
    the GIL, so these are truly parallel; idle pool threads sleep on a queue, never spin.

    Jobs that meet at a barrier (`sync`, from `core.barrier_array`) must all run at once: the pool
    has a thread for each (it grows if the bound fell since the jobs were planned) and one
    caller's jobs enter its queue together. If a job fails, every barrier in `sync` is released,
    so that the others finish (on garbage), and the error is raised."""
    global _pool, _pool_pid, _pool_size
    with _submit:
        if len(jobs) > 1 and (_pool is None or _pool_pid != os.getpid() or _pool_size < len(jobs) - 1):
            from concurrent.futures import ThreadPoolExecutor
            _pool_size = max(get_num_threads() - 1, len(jobs) - 1)
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="lstmkit")
            _pool_pid = os.getpid()     # a forked child makes its own pool: the parent's threads are gone
        futures = [_pool.submit(_released_on_error, fn, args, sync) for args in jobs[1:]]
    try:
        _released_on_error(fn, jobs[0], sync)
    finally:
        for f in futures:
            f.result()


def _released_on_error(fn, args, sync):
    try:
        fn(*args)
    except BaseException:
        if sync is not None:
            sync[:] = _RELEASED     # every barrier step is passed
        raise


_RELEASED = 1 << 62


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
