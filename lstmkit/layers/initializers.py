"""Keras's default weight initialisers, drawing only from a numpy Generator."""
import numpy as np


def glorot_uniform(rng, shape):
    """U(-limit, limit) with limit = sqrt(6 / (fan_in + fan_out)) for a (fan_in, fan_out) matrix."""
    fan_in, fan_out = shape[0], shape[-1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def orthogonal(rng, shape):
    """A (rows, cols) matrix with orthonormal rows or columns (whichever is fewer), as Keras draws it:
    QR of a normal matrix, with Q's column signs fixed by diag(R)."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q.T if rows < cols else q


def embedding_uniform(rng, shape):
    """Keras's Embedding default: U(-0.05, 0.05)."""
    return rng.uniform(-0.05, 0.05, size=shape)
