"""Recycled, aligned memory for the kernels' large arrays.

A fresh large NumPy array costs a page fault for every 4 KB page it first touches: glibc gives
blocks over 128 KB back to the system when they are freed, so every call faults its buffers in
again, at about 1 µs a page here. Measured on the LSTM forward (2 threads): 4.0 ms with fresh
arrays against 2.5 ms recycled at (B, T, I, H) = (16, 200, 64, 64), 20 ms against 13 ms at
(32, 100, 256, 256).

`empty` hands out views of blocks the pool keeps. A block is free again once no array refers to
it: every view of a block (reshapes and slices included) keeps the block as its `.base`, so the
block's reference count tells whether anything still uses it. Arrays returned to callers are
ordinary arrays that keep their block busy for as long as they live.

Every array starts on a 128-byte boundary, so threads that write neighbouring blocks of rows
share no cache line (nor the pair of lines the L2 prefetcher fetches together) whenever a row
is a whole number of 128-byte pairs (float32 rows of a multiple of 32 values). Every array of a
pooled block starts on a 4 KB page, so that threads also share no page where a thread's rows of
a step fill whole pages (the gates at 16, 200, 64, 64: 8 KB a thread a step): the prefetcher of
one core, running ahead of the rows it writes, would otherwise fetch lines of the same page that
the other core is about to write (four alternating pairs there, the training forward 0.92-0.96
-> 0.85-0.91 ms).
"""
import bisect
import math
import os
import sys
import threading

import numpy as np

ALIGN = 128                     # bytes
PAGE = 4096                     # bytes: the alignment of each array of a pooled block
POOL_MIN_BYTES = 1 << 17        # smaller arrays come from malloc, which reuses them without faults
SMALL_KEPT = 256                # small blocks remembered, one per size (`_small_block`)
POOL_MAX_FREE_BYTES = 1 << 29   # free blocks beyond this go back to the system at the next allocation
LAYOUTS_KEPT = 256              # group layouts remembered (`_layout`)

_blocks = []                    # 1-D uint8 arrays owned by the pool, smallest first
_sizes = []                     # their sizes in bytes, in the same order
_starts = {}                    # id of a block -> the offset of its first page boundary
_lock = threading.Lock()
_layouts = {}                   # specs of a group -> its layout (`_layout`)
_small = {}                     # bytes -> [block, start]: the last small block of that size


def _free_blocks():
    """The blocks nothing but the pool refers to."""
    free = []
    for block in _blocks:
        if sys.getrefcount(block) <= _FREE_REFS:
            free.append(block)
    return free


def _refs_in_loop(blocks):
    for block in blocks:
        return sys.getrefcount(block)


def _refs_at(blocks, i):
    return sys.getrefcount(blocks[i])


_FREE_REFS = _refs_in_loop([np.empty(1, np.uint8)])   # what _free_blocks's loop sees of a block only a list holds
_FREE_REFS_AT = _refs_at([np.empty(1, np.uint8)], 0)  # ... and `_smallest_free`'s and `_small_block`'s look at one


def _nbytes(block):
    return block.nbytes


def empty(shape, dtype):
    """An uninitialised, 128-byte aligned, C-contiguous array of shape and dtype, recycled: from
    the pool when it is large (then page-aligned), else the last block of its size when free."""
    return empty_group((shape, dtype))[0]


def empty_group(*specs):
    """Arrays of the (shape, dtype) specs, each as from `empty`, carved from one block: one
    allocation for arrays that live and die together. Any of them keeps the whole block busy.
    The Python around a kernel call runs with cold caches (the call evicts them), where each
    NumPy operation costs microseconds: the layout of a group is worked out once per specs, and
    each array is a single constructor call on the block."""
    layout = _layouts.get(specs)
    if layout is None:
        layout = _layout(specs)
    nbytes, arrays = layout
    block, start = _block(nbytes)
    return [np.ndarray(shape, dtype, block, start + offset) for shape, dtype, offset in arrays]


def _layout(specs):
    """(bytes, [(shape, dtype, offset)]) of a group, remembered for the next call with its specs:
    each array ALIGN-aligned, or PAGE-aligned where the group comes from the pool."""
    parsed = [((shape if isinstance(shape, tuple) else (shape,)), np.dtype(dtype)) for shape, dtype in specs]
    sizes = [math.prod(shape) * dtype.itemsize for shape, dtype in parsed]
    align = ALIGN if sum(-(-n // ALIGN) * ALIGN for n in sizes) < POOL_MIN_BYTES else PAGE
    arrays, nbytes = [], 0
    for (shape, dtype), n in zip(parsed, sizes):
        arrays.append((shape, dtype, nbytes))
        nbytes += -(-n // align) * align
    if len(_layouts) >= LAYOUTS_KEPT:     # (e.g. a new sequence length every batch)
        _layouts.clear()
    _layouts[specs] = layout = nbytes, arrays
    return layout


def _block(nbytes):
    """A block of at least nbytes from its aligned start on (ALIGN, or PAGE from the pool), and
    that start."""
    if nbytes < POOL_MIN_BYTES:
        return _small_block(nbytes + ALIGN)
    size = nbytes + PAGE
    with _lock:
        block = _smallest_free(size)
        if block is None:
            block = np.empty(size, np.uint8)
            at = bisect.bisect_right(_sizes, size)
            _blocks.insert(at, block)
            _sizes.insert(at, size)
            _starts[id(block)] = -block.ctypes.data % PAGE
        if sum(_sizes) - block.nbytes > POOL_MAX_FREE_BYTES:                  # (else the free ones are not)
            free = _free_blocks()                                            # (block is held here: not free)
            if sum(map(_nbytes, free)) > POOL_MAX_FREE_BYTES:
                _release(free)
        return block, _starts[id(block)]


def _small_block(size):
    """A small block of size bytes from malloc, and its first ALIGN-byte boundary: the one of the
    last call with this size if nothing refers to it any more. Finding the boundary
    (`ndarray.ctypes`) costs 15 µs in the cold Python around a kernel call, against 1 µs for
    this lookup."""
    with _lock:
        kept = _small.get(size)
        if kept is not None and _refs_at(kept, 0) <= _FREE_REFS_AT:
            return kept[0], kept[1]
        block = np.empty(size, np.uint8)
        if len(_small) >= SMALL_KEPT:
            _small.clear()
        _small[size] = [block, -block.ctypes.data % ALIGN]
        return block, _small[size][1]


def _smallest_free(size):
    """The smallest free block of size to 2 size bytes, or None. Only those blocks are looked
    at (`_blocks` is sorted by size): looking at every block cost 2.7 against 0.8 µs a call with
    14 blocks, warm, and the Python around a kernel call runs with cold caches."""
    for i in range(bisect.bisect_left(_sizes, size), bisect.bisect_right(_sizes, 2 * size)):
        if _refs_at(_blocks, i) <= _FREE_REFS_AT:
            return _blocks[i]
    return None


def zeros(shape, dtype):
    """empty(shape, dtype) filled with zeros."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def pooled_bytes():
    """(bytes in use, bytes free) in the pool's blocks."""
    with _lock:
        free = sum(map(_nbytes, _free_blocks()))
        return sum(map(_nbytes, _blocks)) - free, free


def _release(free):
    """Drop free blocks, largest first, until those left hold at most POOL_MAX_FREE_BYTES."""
    total = sum(map(_nbytes, free))
    dropped = set()
    for block in sorted(free, key=_nbytes, reverse=True):
        if total <= POOL_MAX_FREE_BYTES:
            break
        total -= block.nbytes
        dropped.add(id(block))
        del _starts[id(block)]
    _blocks[:] = [block for block in _blocks if id(block) not in dropped]
    _sizes[:] = [block.nbytes for block in _blocks]


def _after_fork():
    global _lock
    _lock = threading.Lock()   # a fork while another thread held it would leave it held forever


os.register_at_fork(after_in_child=_after_fork)
