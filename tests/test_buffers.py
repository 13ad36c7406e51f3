"""The kernels' recycled buffers: aligned, reused only once nothing refers to them, bounded."""
import weakref

import numpy as np
import pytest

from lstmkit.kernels import buffers

LARGE = (300, 200)   # 240 KB of float32: from the pool
SMALL = (3, 5)       # from malloc


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(buffers, "_blocks", [])
    monkeypatch.setattr(buffers, "_sizes", [])
    monkeypatch.setattr(buffers, "_starts", {})
    monkeypatch.setattr(buffers, "_small", {})
    return buffers


@pytest.mark.parametrize("shape,dtype", [(LARGE, np.float32), (SMALL, np.float64), ((7,), np.int64),
                                         ((2, 0, 3), np.float32)])
def test_arrays_are_aligned_contiguous_and_of_the_asked_shape(pool, shape, dtype):
    a = pool.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.size == 0 or a.ctypes.data % pool.ALIGN == 0      # an empty array has no data to align
    assert np.all(pool.zeros(shape, dtype) == 0)


def test_the_arrays_of_a_pooled_group_start_on_pages(pool):
    group = pool.empty_group((LARGE, np.float32), (SMALL, np.float64), ((7,), np.int64), (LARGE, np.float32))
    assert [a.ctypes.data % pool.PAGE for a in group] == [0] * 4
    assert len({a.ctypes.data for a in group}) == 4
    small = pool.empty_group((SMALL, np.float64), ((7,), np.int64))     # from malloc: 128-byte aligned
    assert [a.ctypes.data % pool.ALIGN for a in small] == [0, 0] and small[1].ctypes.data - small[0].ctypes.data == 128


def test_a_block_is_reused_only_when_nothing_refers_to_it(pool):
    a = pool.empty(LARGE, np.float32)
    address = a.ctypes.data
    view = a[10:20].reshape(-1)
    del a
    b = pool.empty(LARGE, np.float32)          # the view still holds the first block
    assert b.ctypes.data != address
    assert pool.pooled_bytes()[1] == 0
    b[...] = 1.0
    view[...] = 2.0                             # writing through the live view leaves b alone
    assert np.all(b == 1.0)
    del view
    assert pool.pooled_bytes()[1] > 0
    c = pool.empty(LARGE, np.float32)
    assert c.ctypes.data == address             # the first block, free again
    assert len(pool._blocks) == 2


def test_a_small_block_is_reused_only_when_nothing_refers_to_it(pool):
    a = pool.empty(SMALL, np.float64)
    b = pool.empty(SMALL, np.float64)           # a still holds the first block
    assert b.base is not a.base
    b[...] = 1.0
    a[...] = 2.0
    assert np.all(b == 1.0)
    block = weakref.ref(b.base)
    del b
    c = pool.empty(SMALL, np.float64)           # the last block of this size, free again
    assert c.base is block() and c.ctypes.data % pool.ALIGN == 0
    assert len(pool._blocks) == 0               # small blocks stay out of the pool


def test_blocks_far_larger_than_asked_are_not_used(pool):
    big = pool.empty((4000, 200), np.float32)
    big_block = id(big.base)
    del big
    small = pool.empty(LARGE, np.float32)
    assert len(pool._blocks) == 2 and id(small.base) != big_block


def test_free_memory_is_bounded(pool, monkeypatch):
    monkeypatch.setattr(pool, "POOL_MAX_FREE_BYTES", 1 << 20)
    for rows in range(200, 1300, 100):          # 11 sizes under 1 MB, each dropped at once: 5.3 MB
        a = pool.empty((rows, 200), np.float32)
        used, free = pool.pooled_bytes()
        assert used == a.base.nbytes and free <= 1 << 20
        del a
    assert pool.pooled_bytes()[1] > 0


def test_free_blocks_beyond_the_bound_go_back_at_the_next_allocation(pool, monkeypatch):
    monkeypatch.setattr(pool, "POOL_MAX_FREE_BYTES", 1 << 20)
    alive = [pool.empty((500, 200), np.float32) for _ in range(6)]   # 6 x 400 KB, all in use
    del alive
    assert pool.pooled_bytes() == (0, 6 * pool._blocks[0].nbytes)
    kept = pool.empty((500, 200), np.float32)                          # a hit: reuses one block
    used, free = pool.pooled_bytes()
    assert used == kept.base.nbytes and free <= 1 << 20


def test_threads_never_share_a_block(pool):
    from concurrent.futures import ThreadPoolExecutor

    def fill(k):
        arrays = []
        for _ in range(50):
            a = pool.empty(LARGE, np.float32)
            a.fill(k)
            arrays.append(a)
            if len(arrays) > 3:
                arrays.pop(0)
            assert all(np.all(b == k) for b in arrays)
        return True

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(fill, range(4)))


def test_a_group_is_aligned_arrays_of_one_block_free_when_all_die(pool):
    a, b, c = pool.empty_group((LARGE, np.float32), ((3, 7), np.float64), ((5,), np.int64))
    assert [x.shape for x in (a, b, c)] == [LARGE, (3, 7), (5,)]
    assert [x.dtype for x in (a, b, c)] == [np.float32, np.float64, np.int64]
    assert all(x.ctypes.data % pool.ALIGN == 0 and x.flags.c_contiguous for x in (a, b, c))
    assert a.base is b.base is c.base and len(pool._blocks) == 1
    a[...], b[...], c[...] = 1.0, 2.0, 3                  # no two overlap
    assert np.all(a == 1.0) and np.all(b == 2.0) and np.all(c == 3)
    del a, b
    assert pool.pooled_bytes()[1] == 0                     # c still holds the block
    del c
    assert pool.pooled_bytes()[0] == 0


def test_the_smallest_free_block_that_fits_is_used(pool):
    arrays = [pool.empty((rows, 200), np.float32) for rows in (600, 450, 330, 310)]   # 480, 360, 264, 248 KB
    block_of = {rows: id(a.base) for rows, a in zip((600, 450, 330, 310), arrays)}
    del arrays
    a = pool.empty((320, 200), np.float32)      # 256 KB: the 248 KB block is too small
    b = pool.empty((300, 200), np.float32)      # 240 KB
    c = pool.empty((300, 200), np.float32)      # 240 KB again: 360 KB is the smallest free block that fits
    assert [id(x.base) for x in (a, b, c)] == [block_of[330], block_of[310], block_of[450]]
    assert len(pool._blocks) == 4
