"""Forecasting app: baselines, metrics, conformal intervals, the CLI's errors, save and predict."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from lstmkit import cli
from lstmkit.apps import baselines as bl
from lstmkit.apps import conformal as cf
from lstmkit.apps import forecast as fa

FAST = ["--units", "8", "--epochs", "6", "--patience", "3", "--ensemble", "2", "--quiet"]


def test_simple_baselines():
    y = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(bl.naive(y, 3), [8, 8, 8])
    np.testing.assert_array_equal(bl.seasonal_naive(y, 5, 4), [5, 6, 7, 8, 5])
    np.testing.assert_array_equal(bl.seasonal_naive(y, 2, None), [8, 8])
    np.testing.assert_allclose(bl.drift(y, 2), [9, 10])


def test_ets_and_its_track_agree_with_statsmodels():
    t = np.arange(96)
    y = 10 + 0.1 * t + 2 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.1, 96)
    f = bl.ets(y[:84], 12, 12)
    assert np.mean(np.abs(f - y[84:])) < 0.4
    params = bl.ets_params(y[:84], 12)
    track, errors = bl.ets_track(y, params, 12)
    np.testing.assert_allclose(track[83], f, atol=1e-8)
    assert track.shape == (96, 12) and errors.shape == (96,)


def test_accuracy_measures():
    m = bl.accuracy([1.0, 2.0, 4.0], [1.0, 3.0, 2.0], scale=2.0)
    assert m["MAE"] == pytest.approx(1.0)
    assert m["RMSE"] == pytest.approx(np.sqrt(5 / 3))
    assert m["MASE"] == pytest.approx(0.5)
    assert m["sMAPE"] == pytest.approx(100 * (0 + 2 / 5 + 4 / 6) / 3 * 2 / 2 * 1)
    assert bl.mase_scale(np.array([0.0, 1, 3, 6]), None) == pytest.approx(2.0)
    assert bl.mase_scale(np.array([0.0, 1, 5, 3, 9]), 2) == pytest.approx(np.mean([5, 2, 4]))


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_conformal_coverage_on_known_noise(level):
    """Forecast = the true signal, errors = Gaussian noise whose size grows with the step and
    varies by window: split conformal must cover close to the nominal level on new windows."""
    rng = np.random.default_rng(1)
    H = 6

    def draw(n):
        scale = rng.uniform(0.5, 3.0, n)
        noise = rng.normal(size=(n, H)) * np.sqrt(np.arange(1, H + 1)) * scale[:, None]
        signal = rng.normal(size=(n, H)) * 10
        return signal, signal + noise, scale

    f_cal, y_cal, s_cal = draw(400)
    cal = cf.calibrate(y_cal - f_cal, s_cal, (level,))
    f, y, s = draw(4000)
    lo, hi = cf.intervals(f, cal, s)[level]
    cov = cf.coverage(y, lo, hi)
    assert abs(cov - level) < 0.03, cov
    assert cal["width"][-1] > cal["width"][0] * 1.8       # wider for later steps


def test_conformal_quantile():
    assert cf.conformal_quantile(np.arange(1.0, 11.0), 0.8) == 9.0     # ceil(11 * 0.8) = 9th
    assert cf.conformal_quantile(np.arange(1.0, 11.0), 0.95) == 10.0   # capped at the largest


def _csv(tmp_path, n=150, name="data.csv", gaps=True, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 50 + 0.2 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, n)
    x = np.cos(2 * np.pi * t / 12) + rng.normal(0, 0.1, n)
    df = pd.DataFrame({"month": pd.date_range("2000-01-01", periods=n, freq="MS").strftime("%Y-%m-%d"),
                       "sales": y, "promo": x})
    if gaps:
        df.loc[[10, 11, 40], "sales"] = np.nan
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path)


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_end_to_end_outputs_and_predict_reproduces(tmp_path, capsys):
    csv = _csv(tmp_path)
    out = str(tmp_path / "run")
    code, stdout, err = _run(["forecast", "--csv", csv, "--target", "sales", "--time", "month",
                              "--out", out, "--backtest", "2", *FAST[:-1]], capsys)
    assert code == 0, err
    assert "sales: 3 missing of 150 at 2000-11-01..2000-12-01, 2003-05-01; filled by interpolate" in stdout
    assert "best baseline" in stdout and ("beat" in stdout)
    for f in ("forecast.csv", "metrics.json", "forecast.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert set(metrics["methods"]) == {"lstm", "naive", "seasonal_naive", "drift", "ets"}
    for name, m in metrics["methods"].items():
        assert {"MAE", "RMSE", "MASE", "sMAPE"} <= set(m) and all(np.isfinite(list(m.values())))
    assert 0 <= metrics["methods"]["lstm"]["coverage80"] <= metrics["methods"]["lstm"]["coverage95"] <= 1
    assert metrics["best_baseline"] in ("naive", "seasonal_naive", "drift", "ets")
    assert metrics["settings"]["period"] == 12 and len(metrics["per_origin"]) == 2
    table = pd.read_csv(os.path.join(out, "forecast.csv"))
    test, future = table[table.part == "test"], table[table.part == "future"]
    assert len(test) == 12 and len(future) == 12
    assert (test.lower95 <= test.lower80).all() and (test.lower80 <= test.lstm).all()
    assert (test.lstm <= test.upper80).all() and (test.upper80 <= test.upper95).all()
    assert future.time.iloc[0] == "2012-07-01"

    pred_csv = str(tmp_path / "pred.csv")
    code, stdout, err = _run(["forecast", "predict", "--model", out, "--csv", csv,
                              "--out", pred_csv], capsys)
    assert code == 0, err
    pred = pd.read_csv(pred_csv)
    np.testing.assert_allclose(pred.forecast, future.lstm, rtol=1e-6)
    np.testing.assert_allclose(pred.upper95, future.upper95, rtol=1e-6)
    assert list(pred.time) == list(future.time)

    code, _, err = _run(["forecast", "--csv", csv, "--target", "sales", "--out", out, *FAST], capsys)
    assert code == 2 and "already holds" in err                      # never overwrites a run
    code, _, err = _run(["forecast", "predict", "--model", out, "--csv", csv, "--out", pred_csv], capsys)
    assert code == 2 and "exists" in err


def test_recursive_with_covariates_and_log(tmp_path, capsys):
    csv = _csv(tmp_path, gaps=False)
    r = fa.forecast(csv=csv, target="sales", time="month", features=["promo"], strategy="recursive", log=True,
                    units=8, epochs=4, patience=2, ensemble=1, horizon=6, fill="moving-average")
    s = r["summary"]
    assert s["features"] == ["promo"] and s["settings"]["strategy"] == "recursive"
    assert np.isfinite(r["table"].query("part != 'history'")["lstm"]).all()
    assert s["verdict"].startswith("LSTM")


@pytest.mark.parametrize("content,args,message", [
    ("a,b\n1,2\n", ["--target", "y"], "has no column 'y'"),
    ("y\n" + "1\n" * 5 + "oops\n" + "2\n" * 60, ["--target", "y"], "non-numeric values ('oops')"),
    ("y\n" + "\n".join(str(v) for v in range(20)) + "\n", ["--target", "y"], "the series has 20 rows but"),
    ("y,x\n" + ",1\n" * 80, ["--target", "y"], "column 'y' has no numeric values"),
    ("y\n" + "3\n" * 80, ["--target", "y"], "is constant"),
    ("y\n" + "\n".join(str(v) for v in range(80)) + "\n", [], "--target COLUMN is required"),
])
def test_bad_csv_is_a_clear_error_with_exit_2(tmp_path, capsys, content, args, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    code, _, err = _run(["forecast", "--csv", str(p), *args, "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o")


def test_other_user_errors(tmp_path, capsys):
    code, _, err = _run(["forecast", "--dataset", "nope", *FAST], capsys)
    assert code == 2 and "built-in series are" in err
    code, _, err = _run(["forecast", "predict", "--model", str(tmp_path), "--dataset", "co2"], capsys)
    assert code == 2 and "no saved forecast model" in err
    code, _, err = _run(["forecast", "--dataset", "airpassengers", "--backtest", "20", *FAST], capsys)
    assert code == 2 and "backtest 20" in err


def test_demo_runs_the_default_co2_forecast(tmp_path, monkeypatch, capsys):
    import argparse

    from lstmkit.apps.forecast import demo_command
    monkeypatch.chdir(tmp_path)
    assert demo_command(argparse.Namespace(seed=0, quiet=True)) == 0
    out = capsys.readouterr().out
    assert "best baseline" in out.lower() or "beat" in out
    for name in ("forecast.csv", "metrics.json", "forecast.png"):
        assert (tmp_path / "forecast-co2" / name).exists()
