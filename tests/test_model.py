"""Sequential: training, determinism, shape checks, callbacks, summary."""
import io

import numpy as np
import pytest

from lstmkit import callbacks, optim
from lstmkit.layers import LSTM, Dense, Dropout, Embedding
from lstmkit.model import Sequential

rng = np.random.default_rng(0)
X = rng.standard_normal((48, 6, 2)).astype(np.float32)
Y = (X[:, :, 0].sum(1, keepdims=True) * 0.3).astype(np.float32)


def regressor(seed=0, **kw):
    model = Sequential([LSTM(8), Dropout(0.1), Dense(1)], seed=seed)
    model.compile(optim.Adam(0.01), "mse", **kw)
    return model


def test_fit_lowers_the_loss_and_records_history():
    model = regressor(metrics=["mae", "rmse"])
    hist = model.fit(X, Y, epochs=8, batch_size=16, validation_split=0.25, verbose=0)
    h = hist.history
    assert set(h) == {"loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse"}
    assert all(len(v) == 8 for v in h.values())
    assert h["loss"][-1] < 0.7 * h["loss"][0]
    assert hist.epoch == list(range(8)) and model.epoch == 8 and model.history is hist
    loss, mae, rmse = model.evaluate(X, Y)
    assert np.isclose(rmse, np.sqrt(loss), rtol=1e-5)
    assert set(model.evaluate(X, Y, return_dict=True)) == {"loss", "mae", "rmse"}


def test_same_seed_same_numbers():
    a, b, c = regressor(seed=3), regressor(seed=3), regressor(seed=4)
    ha = a.fit(X, Y, epochs=2, batch_size=8, verbose=0).history
    hb = b.fit(X, Y, epochs=2, batch_size=8, verbose=0).history
    c.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    assert ha == hb
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_predict_and_validation_data():
    model = regressor()
    model.fit(X, Y, epochs=1, validation_data=(X[:5], Y[:5]), verbose=0)
    p = model.predict(X, batch_size=7)
    assert p.shape == (48, 1) and p.dtype == np.float32
    np.testing.assert_allclose(p, model.predict(X, batch_size=100), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, model(X), rtol=1e-5, atol=1e-6)
    # targets without the trailing unit axis are accepted, like Keras
    model.fit(X, Y[:, 0], epochs=1, verbose=0)


def test_train_on_batch_changes_weights():
    model = regressor()
    model.build((6, 2))
    before = model.get_weights()
    loss = model.train_on_batch(X[:8], Y[:8])
    assert isinstance(loss, float)
    assert not np.array_equal(before[0], model.get_weights()[0])
    assert set(model.train_on_batch(X[:8], Y[:8], return_dict=True)) == {"loss"}


def test_language_model_with_padding_mask():
    V = 12
    ids = rng.integers(1, V, (20, 9))
    ids[:10, 6:] = 0                                   # right padding
    model = Sequential([Embedding(V, 6, mask_zero=True), LSTM(10, return_sequences=True), Dense(V)], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy", "perplexity"])
    x, y = ids[:, :-1], ids[:, 1:]
    h = model.fit(x, y, epochs=3, batch_size=5, verbose=0).history
    assert h["loss"][-1] < h["loss"][0]
    assert np.isclose(np.exp(model.evaluate(x, y)[0]), model.evaluate(x, y)[2], rtol=1e-5)
    # targets under the padding do not count
    y2 = y.copy()
    y2[:10, 6:] = (y2[:10, 6:] + 1) % V
    assert model.evaluate(x, y)[0] == model.evaluate(x, y2)[0]


def test_wrong_inputs_are_refused_before_any_weight_changes():
    model = regressor()
    model.fit(X, Y, epochs=1, verbose=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        model.fit(X[..., :1], Y, verbose=0)
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        model.predict(X[:, :, 0])
    with pytest.raises(ValueError, match=r"\(batch, 1\)"):
        model.fit(X, np.zeros((48, 3)), verbose=0)
    with pytest.raises(ValueError, match="48 samples"):
        model.fit(X, Y[:40], verbose=0)
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, Y, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, Y, batch_size=0, verbose=0)
    assert all(np.array_equal(u, v) for u, v in zip(before, model.get_weights()))

    lm = Sequential([Embedding(10, 4), LSTM(5), Dense(10)], seed=0)
    lm.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="integer"):
        lm.fit(np.full((4, 3), 0.5), np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match=r"integer class ids of shape \(batch,\)"):
        lm.fit(np.zeros((4, 3), int), np.zeros((4, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        lm.fit(np.zeros((4, 3), int), np.full(4, 10), verbose=0)
    with pytest.raises(ValueError, match="compile"):
        Sequential([Dense(1)]).fit(np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="return_state"):
        Sequential([LSTM(3, return_state=True), Dense(1)]).build((4, 2))


def test_summary_counts_parameters_like_keras():
    model = Sequential([LSTM(50), Dense(1)], input_shape=(1, 1))
    text = model.summary()
    assert 'Model: "sequential"' in text
    assert "lstm (LSTM)" in text and "(None, 50)" in text and "10,400" in text
    assert "dense (Dense)" in text and "51" in text
    assert "Total params: 10,451 (40.82 KB)" in text
    assert "Non-trainable params: 0 (0.00 B)" in text
    lines = []
    model.summary(print_fn=lines.append)
    assert lines == [text]
    two = Sequential([LSTM(4, return_sequences=True), LSTM(4), Dense(1)], input_shape=(5, 3))
    assert [l.name for l in two.layers] == ["lstm", "lstm_1", "dense"]


def test_early_stopping_restores_best_weights():
    model = regressor()
    seen = []

    class Record(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], model.get_weights()))

    stop = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model.compile(optim.SGD(2.0), "mse")            # far too large: the loss soon rises
    model.fit(X, Y, epochs=30, batch_size=8, validation_split=0.25, callbacks=[Record(), stop], verbose=0)
    assert stop.stopped_epoch is not None and len(seen) < 30
    best = min(range(len(seen)), key=lambda k: seen[k][0])
    assert all(np.array_equal(u, v) for u, v in zip(seen[best][1], model.get_weights()))
    with pytest.raises(ValueError, match="val_loss"):
        regressor().fit(X, Y, epochs=1, callbacks=[callbacks.EarlyStopping()], verbose=0)


def test_reduce_lr_on_plateau_and_schedules():
    model = regressor()
    model.compile(optim.Adam(0.01), "mse")
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0, min_lr=0.002)
    h = model.fit(X, Y, epochs=4, callbacks=[cb], verbose=0).history
    assert h["learning_rate"] == [0.01, 0.005, 0.0025, 0.002]
    sched = optim.CosineDecay(0.0, decay_steps=10, warmup_target=0.01, warmup_steps=3)
    model.compile(optim.Adam(sched), "mse")
    model.fit(X, Y, epochs=3, batch_size=8, verbose=0)
    assert model.optimizer.iterations == 18
    assert np.isclose(model.optimizer.learning_rate, 0.0)


def test_model_checkpoint_best_only(tmp_path):
    model = regressor()
    path = tmp_path / "best-{epoch}.safetensors"
    cb = callbacks.ModelCheckpoint(str(path), monitor="loss", save_best_only=True)
    model.fit(X, Y, epochs=3, callbacks=[cb], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-1.safetensors", "best-2.safetensors",
                                                          "best-3.safetensors"]


def test_progress_bar_on_a_terminal_and_quiet_otherwise(capsys):
    from rich.console import Console
    buf = io.StringIO()
    bar = callbacks.ProgressBar(console=Console(file=buf, force_terminal=True, width=150))
    regressor().fit(X, Y, epochs=2, batch_size=16, validation_split=0.25, callbacks=[bar], verbose=0)
    text = buf.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "samples/s" in text and "val_loss" in text
    regressor().fit(X, Y, epochs=1, verbose="auto")     # stdout is not a terminal under pytest
    regressor().fit(X, Y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    regressor().fit(X, Y, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("Epoch 2/2") and "loss" in out[1]


def test_softmax_output_and_crossentropy():
    from lstmkit.losses import SparseCategoricalCrossentropy
    model = Sequential([Embedding(10, 4), LSTM(5), Dense(10, activation="softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["perplexity"])
    assert model.loss.from_logits is False
    x, y = rng.integers(0, 10, (8, 3)), rng.integers(0, 10, 8)
    loss, ppl = model.evaluate(x, y)
    p = model.predict(x)
    assert np.isclose(loss, -np.mean(np.log(p[np.arange(8), y])), rtol=1e-5)
    assert np.isclose(ppl, np.exp(loss), rtol=1e-5)
    with pytest.raises(ValueError, match="from_logits"):
        model.compile("adam", SparseCategoricalCrossentropy(from_logits=True))


def test_terminate_on_nan_and_lambda_callback():
    model = regressor()
    stop = callbacks.TerminateOnNaN()
    stop.set_model(model)
    stop.on_train_batch_end(0, {"loss": float("nan")})
    assert model.stop_training
    epochs = []
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(e))])
    assert epochs == [0, 1] and not model.stop_training
