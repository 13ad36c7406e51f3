"""Choosing the next token from a model's scores: temperature, top-k and top-p (nucleus) sampling.

Order as in common practice: divide the logits by the temperature, keep the top_k most likely
tokens, then the smallest set of those whose probabilities reach top_p, renormalise and draw.
Temperature 0 is greedy decoding (the most likely token), the limit of small temperatures.
"""
import numpy as np


def check_sampling(temperature=1.0, top_k=0, top_p=1.0):
    """ValueError unless temperature >= 0, top_k >= 0 (0 = no limit) and 0 < top_p <= 1."""
    if not temperature >= 0:
        raise ValueError(f"--temperature must be 0 (greedy) or positive, got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"--top-k must be a whole number >= 0 (0 = no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {top_p}")


def filter_logits(logits, top_k=0, top_p=1.0):
    """logits (V,) -> a float64 copy with -inf on every token outside the top_k most likely and
    outside the smallest most-likely set whose probability reaches top_p (always keeps the best)."""
    z = np.array(logits, dtype=np.float64)
    if top_k and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z[z < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-z, kind="stable")
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        before = np.cumsum(p) - p          # probability of the tokens ranked above each one
        z[order[before >= top_p]] = -np.inf
    return z


def probabilities(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Sampling distribution (V,) float64 over the next token; one-hot on the argmax for temperature 0."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        p = np.zeros(z.size)
        p[int(np.argmax(z))] = 1.0
        return p
    z = filter_logits(z / temperature, top_k, top_p)
    p = np.exp(z - z.max())
    return p / p.sum()


def sample_token(logits, rng, temperature=1.0, top_k=0, top_p=1.0):
    """Draw one token id from logits (V,) with rng (numpy Generator)."""
    if temperature == 0:
        return int(np.argmax(logits))
    p = probabilities(logits, temperature, top_k, top_p)
    return int(rng.choice(p.size, p=p))
