"""Saving and loading: exact round trips, clear errors for bad files, and resuming after a kill."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load as st_load, save as st_save

import lstmkit
from lstmkit import checkpoint, optim
from lstmkit.checkpoint import load_model, save_model
from lstmkit.layers import GRU, Dense, Embedding, LSTM
from lstmkit.model import Sequential

rng = np.random.default_rng(0)


def trained_lm(dtype="float32"):
    ids = rng.integers(1, 15, (16, 8))
    model = Sequential([Embedding(15, 4, mask_zero=True, dtype=dtype), LSTM(6, return_sequences=True, dtype=dtype),
                        GRU(5, return_sequences=True, dtype=dtype), Dense(15, dtype=dtype)], seed=1)
    model.compile(optim.AdamW(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ids[:, :-1], ids[:, 1:], epochs=2, batch_size=4, verbose=0)
    return model, ids[:, :-1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    model, x = trained_lm(dtype)
    extra = {"vocab": list("abcdefghijklmno"), "scaler": {"mean": 1.5, "std": 0.25}}
    path = tmp_path / "lm.safetensors"
    model.save(path, extra=extra)
    loaded, got = load_model(path)
    assert got == extra and loaded.extra == extra
    assert np.array_equal(model.predict(x), loaded.predict(x))
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))
    assert loaded.epoch == 2 and loaded.optimizer.iterations == model.optimizer.iterations
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.metrics == ["accuracy"]
    assert lstmkit.load(path).count_params() == model.count_params()


def test_directory_path_and_no_temporary_files_left(tmp_path):
    model, x = trained_lm()
    save_model(model, tmp_path, include_optimizer=False)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    loaded, extra = load_model(tmp_path)
    assert extra is None and np.array_equal(model.predict(x), loaded.predict(x))
    # saving again replaces the file atomically
    model.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    model, _ = trained_lm()
    path = tmp_path / "m.safetensors"
    model.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]


def test_never_overwrites_other_files(tmp_path):
    model, _ = trained_lm()
    precious = tmp_path / "data.csv"
    precious.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an lstmkit model"):
        model.save(precious)
    assert precious.read_text() == "a,b\n1,2\n"
    with pytest.raises(ValueError, match="JSON"):
        model.save(tmp_path / "m.safetensors", extra={"f": object()})


@pytest.fixture
def saved(tmp_path):
    model, _ = trained_lm()
    path = tmp_path / "m.safetensors"
    model.save(path)
    return path


def rewrite(path, edit_meta=None, edit_tensors=None, fix_checksum=True):
    """Rewrite a saved model with changed metadata or tensors (optionally with a valid checksum)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["lstmkit"])
    tensors = dict(st_load(data))
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    if fix_checksum:
        meta["checksum"] = checkpoint._checksum({k: v for k, v in meta.items() if k != "checksum"}, tensors)
    path.write_bytes(st_save(tensors, metadata={"lstmkit": json.dumps(meta)}))


def test_missing_empty_truncated_and_corrupted_files(saved, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nothing.safetensors")
    data = saved.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for blob, message in [(b"", "empty or truncated"), (data[:5], "empty or truncated"),
                          (data[:100], "truncated"), (data[:-10], "truncated"),
                          (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "unreadable header"),
                          (b"hello world, not a model at all", "truncated or not a safetensors")]:
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match=message):
            load_model(bad)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF                                  # a bit flip inside the weights
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        load_model(bad)
    other = tmp_path / "other.safetensors"
    other.write_bytes(st_save({"w": np.zeros(3)}))
    with pytest.raises(ValueError, match="not an lstmkit model"):
        load_model(other)


def test_metadata_edits_are_caught(saved):
    rewrite(saved, lambda m: m["architecture"]["layers"][1]["config"].update(units=7), fix_checksum=False)
    with pytest.raises(ValueError, match="checksum"):
        load_model(saved)


def test_wrong_version_unknown_layer_and_shape_mismatch(saved):
    original = saved.read_bytes()
    rewrite(saved, lambda m: m.update(format_version=2))
    with pytest.raises(ValueError, match="newer lstmkit"):
        load_model(saved)
    saved.write_bytes(original)
    rewrite(saved, lambda m: m["architecture"]["layers"][0].update(class_name="os.system"))
    with pytest.raises(ValueError, match="unknown class 'os.system'"):
        load_model(saved)
    saved.write_bytes(original)
    rewrite(saved, lambda m: m["architecture"]["layers"][1]["config"].update(units=7))
    with pytest.raises(ValueError, match="weight lstm/kernel is float32"):
        load_model(saved)
    saved.write_bytes(original)
    rewrite(saved, edit_tensors=lambda t: t.update({"weights/dense/bias": t["weights/dense/bias"].astype(np.float64)}))
    with pytest.raises(ValueError, match="dense/bias is float64"):
        load_model(saved)
    saved.write_bytes(original)
    rewrite(saved, edit_tensors=lambda t: t.pop("weights/gru/bias"))
    with pytest.raises(ValueError, match=r"missing weights \['gru/bias'\]"):
        load_model(saved)
    saved.write_bytes(original)
    rewrite(saved, lambda m: m["architecture"]["layers"][3]["config"].update(bogus=1))
    with pytest.raises(ValueError, match=r"layer 3 \(Dense\) cannot be rebuilt"):
        load_model(saved)


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import lstmkit
    from lstmkit import callbacks, optim
    from lstmkit.layers import LSTM, Dense, Dropout
    from lstmkit.model import Sequential

    path, mode = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5, 2)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None].astype(np.float32)
    if mode == "resume":
        model = lstmkit.load(path)
    else:
        model = Sequential([LSTM(6), Dropout(0.2), Dense(1)], seed=7)
        model.compile(optim.Adam(0.01, clipnorm=1.0), "mse")

    def pause(epoch, logs):
        if mode == "interrupt" and epoch == 1:        # right after the checkpoint of epoch 2
            print("checkpoint", epoch + 1, flush=True)
            sys.stdin.read()                          # wait to be killed

    cbs = [callbacks.ModelCheckpoint(path), callbacks.LambdaCallback(on_epoch_end=pause)]
    model.fit(x, y, epochs=5, batch_size=8, validation_split=0.2, callbacks=cbs, verbose=0,
              initial_epoch=model.epoch)
    np.save(path + ".final.npy", np.concatenate([w.ravel() for w in model.get_weights()]))
""")


def test_killed_and_resumed_training_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    straight, resumed = str(tmp_path / "straight.safetensors"), str(tmp_path / "resumed.safetensors")
    subprocess.run([sys.executable, str(script), straight, "straight"], check=True, env=env, timeout=120)

    proc = subprocess.Popen([sys.executable, str(script), resumed, "interrupt"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "checkpoint 2"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    assert not os.path.exists(resumed + ".final.npy")
    assert lstmkit.load(resumed).epoch == 2
    subprocess.run([sys.executable, str(script), resumed, "resume"], check=True, env=env, timeout=120)

    a, b = np.load(straight + ".final.npy"), np.load(resumed + ".final.npy")
    assert np.array_equal(a, b)
    assert lstmkit.load(resumed).epoch == lstmkit.load(straight).epoch == 5
