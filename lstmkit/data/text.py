"""Text as arrays: a vocabulary (characters or words), the train / validation split, TBPTT batches.

Truncated backpropagation through time (TBPTT) reads the token stream as `batch_size` contiguous
rows; window k of every row follows window k-1 of the same row, so a stateful LSTM can carry its
state from one window to the next while gradients stop at the window's edge.
"""
import re
from collections import Counter

import numpy as np

LEVELS = ("char", "word")
UNK = "<unk>"
# Words (with inner apostrophes, as in "know't" or "'tis"), dashes, single punctuation marks, line breaks.
WORD_RE = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*|'[A-Za-z]+|\n|-+|[^\sA-Za-z0-9]")
NO_SPACE_BEFORE = set(".,;:!?)]'\n")    # single tokens written without a space before them
NO_SPACE_AFTER = set("([\n")           # ... and after them; dashes take no space on either side


def split_words(text):
    """Word-level tokens of text: words, punctuation marks and line breaks, in order."""
    return WORD_RE.findall(text)


def join_words(tokens):
    """Inverse of split_words up to spacing: words separated by one space, none around breaks/punctuation."""
    out = []
    prev = "\n"
    for tok in tokens:
        if space_between(prev, tok):
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


def space_between(prev, tok):
    """Whether join_words puts a space between word tokens prev and tok."""
    return not (tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER or tok.startswith("-") or prev.startswith("-"))


class Vocabulary:
    """Maps tokens to ids 0..size-1 and back.

    level "char": every distinct character of the training text (sorted), no unknown token.
    level "word": the most frequent words, at most max_size tokens including UNK (id 0), which
    stands for every word outside the vocabulary.
    """

    def __init__(self, tokens, level="char"):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if len(tokens) == 0:
            raise ValueError("the vocabulary is empty: the text has no tokens")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.level = level
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.unk_id = self.index.get(UNK) if level == "word" else None

    @classmethod
    def build(cls, text, level="char", max_size=10000):
        """The vocabulary of text: all characters, or the max_size - 1 most frequent words plus UNK."""
        if not text:
            raise ValueError("the text is empty: give a file or folder with some text in it")
        if level == "char":
            return cls(sorted(set(text)), "char")
        if level != "word":
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if max_size < 2:
            raise ValueError(f"--vocab must be at least 2 (one word plus the unknown token), got {max_size}")
        counts = Counter(split_words(text))
        counts.pop(UNK, None)
        # most frequent first, ties broken by the token so the result does not depend on dict order
        words = sorted(counts, key=lambda w: (-counts[w], w))[:max_size - 1]
        return cls([UNK] + words, "word")

    @property
    def size(self):
        return len(self.tokens)

    def __len__(self):
        return len(self.tokens)

    def split(self, text):
        """text -> list of tokens (characters or words), before lookup."""
        return list(text) if self.level == "char" else split_words(text)

    def unknown(self, text):
        """Distinct tokens of text that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in self.split(text) if t not in self.index))

    def encode(self, text):
        """text -> ids (n,) int32. Words outside the vocabulary become UNK; unknown characters are an error."""
        toks = self.split(text)
        if self.level == "char":
            missing = self.unknown(text)
            if missing:
                shown = ", ".join(repr(c) for c in missing[:10])
                raise ValueError(f"characters not in the model's vocabulary: {shown}"
                                 f"{' ...' if len(missing) > 10 else ''}; remove or replace them")
            return np.fromiter((self.index[t] for t in toks), dtype=np.int32, count=len(toks))
        return np.fromiter((self.index.get(t, self.unk_id) for t in toks), dtype=np.int32, count=len(toks))

    def decode(self, ids):
        """ids (n,) -> text."""
        toks = [self.tokens[int(i)] for i in ids]
        return "".join(toks) if self.level == "char" else join_words(toks)

    def to_dict(self):
        """JSON-able form, saved with the model."""
        return {"level": self.level, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(d["tokens"], d["level"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a saved vocabulary (missing {err})") from None


def train_val_split(ids, val_fraction=0.1):
    """The first (1 - val_fraction) of ids (n,) for training, the last val_fraction for validation."""
    ids = np.asarray(ids)
    if not 0 < val_fraction < 1:
        raise ValueError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    n_train = int(len(ids) * (1 - val_fraction))   # as nanoGPT: int(n * 0.9) tokens for training
    n_val = len(ids) - n_train
    if n_train < 2 or n_val < 2:
        raise ValueError(f"the text is too short to split into training and validation ({len(ids)} tokens)")
    return ids[:n_train], ids[n_train:]


class TBPTTBatches:
    """Windows of a token stream for stateful truncated BPTT.

    ids (n,) is cut into batch_size rows of L = (n - 1) // batch_size inputs each, row r reading
    ids[r*L : r*L + L] and predicting ids[r*L + 1 : r*L + L + 1]. One epoch yields
    ceil(L / seq_len) windows (x, y), each (batch_size, t) with t = seq_len except maybe the last:
    window k of row r continues window k-1 of row r, so every position in the first
    batch_size * L + 1 tokens is a target exactly once per epoch, in order. The last (n - 1) % batch_size
    tokens are not used (fewer than batch_size).
    """

    def __init__(self, ids, batch_size, seq_len):
        ids = np.asarray(ids)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch size and sequence length must be positive, got {batch_size} and {seq_len}")
        L = (len(ids) - 1) // batch_size
        if L < 1:
            raise ValueError(f"the text ({len(ids)} tokens) is too short for {batch_size} rows; "
                             "use a smaller --batch-size or a longer text")
        self.batch_size, self.seq_len, self.row_len = batch_size, seq_len, L
        n = batch_size * L
        self.x = ids[:n].reshape(batch_size, L)
        self.y = ids[1:n + 1].reshape(batch_size, L)

    def __len__(self):
        """Windows per epoch."""
        return -(-self.row_len // self.seq_len)

    def window(self, k):
        """Window k of the epoch: x, y each (batch_size, t)."""
        s = slice(k * self.seq_len, min((k + 1) * self.seq_len, self.row_len))
        return self.x[:, s], self.y[:, s]

    def __iter__(self):
        for k in range(len(self)):
            yield self.window(k)


def eval_streams(ids, batch_size):
    """The whole of ids (n,) as batch_size rows for evaluation, padded so no target is lost.

    Returns x, y (batch_size, L) and weight (batch_size, L) float32, 1 for the n - 1 real targets
    and 0 for padding; row r predicts ids[r*L + 1 : r*L + L + 1] from ids[r*L : r*L + L].
    """
    ids = np.asarray(ids)
    n = len(ids) - 1
    if n < 1:
        raise ValueError("need at least two tokens to evaluate")
    batch_size = max(1, min(batch_size, n))
    L = -(-n // batch_size)
    pad = batch_size * L + 1 - len(ids)
    full = np.concatenate([ids, np.zeros(pad, ids.dtype)])
    weight = np.zeros(batch_size * L, np.float32)
    weight[:n] = 1.0
    x = full[:-1].reshape(batch_size, L)
    y = full[1:].reshape(batch_size, L)
    return x, y, weight.reshape(batch_size, L)
