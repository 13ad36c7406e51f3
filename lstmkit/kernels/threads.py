"""One thread setting for every thread the kernels use.

The kernels' threads are their own small crew of Python threads running compiled code that
releases the GIL (`run_parallel`). A kernel call starts one compiled function per thread, once
(`common.forward_on_threads`, `common.backward_on_threads`): each takes its share of the large
products and its own batch rows of the recurrence, and they wait for one another (spinning:
`core.barrier`, `common.step_product`) only where one needs what another computed.
`set_num_threads(n)` bounds the threads a call uses (n - 1 of the crew plus the caller) and,
through threadpoolctl, NumPy's and SciPy's OpenBLAS, so n threads is n threads.
`LSTMKIT_NUM_THREADS` does the same when the kernels are first imported.

Why a spinning crew: a thread asleep on a lock or queue costs 30-80 µs to wake on a virtual
machine (the idle core halts), and so does one asleep on the GIL. A call on two threads through a
thread pool cost 78 µs more than on one; through the crew, 8 µs (`_Crew`, `core.post`).

Why not OpenBLAS's threads: they spin for up to ~0.1 s after every call, taking the cores the
kernels run on. Once the kernels have run, every BLAS in the process (`blas_single`) runs on one
thread: SciPy's, behind the compiled gemm, and NumPy's, behind the Dense layers' products, whose
spinning threads made a char model's training step 1.5x slower (150 ms against 100 at batch 32,
2 x 256). Why not Numba's parallel loops: a function first compiled inside a prange body is cached
in a form that crashes a later process calling it from Python, and GNU OpenMP hangs in forked
children. The crew spins for about a millisecond after a job, then sleeps.
"""
import os
import threading

import numpy as np

_bound = None      # the n of set_num_threads, or None for the BLAS default
_limits = None     # the threadpoolctl limiter in force, kept so the setting lasts
_blas = None       # threadpoolctl controllers of every BLAS library loaded in the process
_single = False    # whether _blas has been set to one thread since the last set_num_threads
_crew = None       # the kernel threads beside the caller's (`_Crew`)
_calls = threading.Lock()    # one call uses the crew at a time


def _after_fork():
    global _calls
    _calls = threading.Lock()    # a fork while another thread held it would leave it held forever


os.register_at_fork(after_in_child=_after_fork)


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


def cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # (not on every platform)
        return os.cpu_count() or 1


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


def run_parallel(fn, jobs, sync):
    """Run fn(*args) for every args in jobs side by side: the first on the calling thread, the
    others on the crew's threads (one each). The compiled parts release the GIL, so these are truly
    parallel. Every compiled part calls `core.started(sync, q)` first and `core.finished(sync, q)`
    last, q its job's index (a Python fn need not); the parts share `sync` (from
    `core.barrier_array`) for their barriers and other waits.

    One call uses the crew at a time (other callers wait). If a job fails (or the caller is
    interrupted), every wait on sync ends, so that the others finish (on garbage), and the error
    is raised."""
    if len(jobs) == 1:
        fn(*jobs[0])
        return
    with _calls:
        _crew_of(len(jobs) - 1).run(fn, jobs, sync)


class _Crew:
    """Worker threads that spin, without the GIL, for SPIN_TURNS turns after each job, then sleep
    on a condition until the next. Their handshakes are compiled (`core.post`, `core.await_job`,
    `core.finished`, `core.await_done`) so that no thread waits for the GIL while another holds it."""

    SPIN_TURNS = 100_000   # about a millisecond here (a pause, 9 ns, and a load per turn); pause
                           # takes 40 ns on some x86 cores, nothing elsewhere: 0.1-4 ms

    def __init__(self, workers):
        from lstmkit.kernels import core
        self.core, self.workers, self.seq = core, workers, 0
        self.mail = np.zeros(workers * core.SYNC_STRIDE, np.int64)
        self.jobs, self.errors = [None] * workers, [None] * workers
        self.wakeup = threading.Condition()
        self.pid = os.getpid()
        for w in range(workers):
            threading.Thread(target=self._work, args=(w,), name=f"lstmkit-{w + 1}", daemon=True).start()

    def run(self, fn, jobs, sync):
        core, n = self.core, len(jobs) - 1
        self.seq += 1
        try:
            for w, args in enumerate(jobs[1:]):
                self.jobs[w], self.errors[w] = (fn, args, sync), None
            if core.post(self.mail, n, self.seq, sync, False) >= 0:    # a worker sleeps: wake it
                self._wake()
                core.post(self.mail, n, self.seq, sync, True)
            _released_on_error(fn, jobs[0], sync)
        except BaseException:           # (KeyboardInterrupt too): the workers must not wait for us
            sync[:] = self.core.RELEASED
            self._wake()
            raise
        finally:
            if self.mail[self.core.POSTED] == self.seq:    # post hands out all jobs or none
                core.await_done(self.mail, n, self.seq, sync)
            self.jobs[:n] = [None] * n
            errors, self.errors = self.errors[:n], [None] * self.workers
        for err in errors:
            if err is not None:
                raise err

    def _wake(self):
        with self.wakeup:
            self.wakeup.notify_all()

    def close(self):
        """Let the workers end (after the job they run, if any)."""
        self.jobs = [None] * self.workers
        self.mail[self.core.POSTED::self.core.SYNC_STRIDE] = -1
        self._wake()

    def _work(self, w):
        core, mail, line = self.core, self.mail, w * self.core.SYNC_STRIDE
        seq = core.await_job(mail, w, 0, self.SPIN_TURNS)
        while True:
            if seq == 0:                                   # spun long enough without a job: sleep
                with self.wakeup:
                    while mail[line + core.POSTED] == mail[line + core.DONE]:
                        self.wakeup.wait(0.05)     # (a missed wake-up only costs 50 ms)
                mail[line + core.ASLEEP] = 0
                seq = int(mail[line + core.POSTED])
            job = self.jobs[w]
            if job is None or seq < 0:
                return
            fn, args, sync = job
            self.jobs[w] = job = None              # hold no array past the job: the pool counts references
            if not hasattr(fn, "py_func"):         # a Python job holds the GIL: started as it is taken
                sync[(w + 1) * core.SYNC_STRIDE + core.STARTED] = 1
            try:
                _released_on_error(fn, args, sync)
            except BaseException as err:
                self.errors[w] = err
            del fn, args, sync
            seq = core.finish_job(mail, w, seq, self.SPIN_TURNS)


def _crew_of(workers):
    """The crew, with at least `workers` threads (a new one in a forked child, whose parent's
    threads are gone, or when more are needed)."""
    global _crew
    if _crew is None or _crew.pid != os.getpid() or _crew.workers < workers:
        if _crew is not None and _crew.pid == os.getpid():
            _crew.close()
        _crew = _Crew(max(workers, get_num_threads() - 1))
    return _crew


def _released_on_error(fn, args, sync):
    try:
        fn(*args)
    except BaseException:
        from lstmkit.kernels.core import RELEASED
        sync[:] = RELEASED      # every wait on sync ends, every part counts as started
        raise


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
