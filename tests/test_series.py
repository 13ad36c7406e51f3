"""Series data layer: missing values, checks, scaling, period inference, windows, CSV reading."""
import numpy as np
import pandas as pd
import pytest

from lstmkit.data import datasets
from lstmkit.data.series import (FILL_STRATEGIES, Scaler, check_column, describe_missing, fill_missing,
                                 future_index, infer_period, make_windows, missing_runs, seasonal_anchor)

GAPPY = np.array([1.0, np.nan, 3.0, 3.0, np.nan, np.nan, 9.0, 10.0, np.nan])


def test_missing_runs_and_report():
    assert missing_runs(GAPPY) == [(1, 1, 1), (4, 5, 2), (8, 8, 1)]
    idx = pd.date_range("2020-01-01", periods=len(GAPPY), freq="MS")
    line = describe_missing(GAPPY, idx, "sales")
    assert line.startswith("sales: 4 missing of 9 at 2020-02-01, 2020-05-01..2020-06-01, 2020-09-01")
    assert describe_missing(np.arange(3.0)) is None


@pytest.mark.parametrize("strategy", FILL_STRATEGIES)
def test_every_strategy_fills_every_gap_and_keeps_observed(strategy):
    out = fill_missing(GAPPY, strategy, window=2)
    assert out.shape == GAPPY.shape and np.isfinite(out).all()
    obs = ~np.isnan(GAPPY)
    np.testing.assert_array_equal(out[obs], GAPPY[obs])


def test_strategy_values():
    obs = GAPPY[~np.isnan(GAPPY)]
    assert fill_missing(GAPPY, "mean")[1] == pytest.approx(obs.mean())
    assert fill_missing(GAPPY, "median")[1] == pytest.approx(np.median(obs))
    assert fill_missing(GAPPY, "mode")[1] == 3.0
    np.testing.assert_allclose(fill_missing(GAPPY, "ffill")[[1, 4, 5, 8]], [1, 3, 3, 10])
    np.testing.assert_allclose(fill_missing(GAPPY, "interpolate")[[1, 4, 5, 8]], [2, 5, 7, 10])
    ma = fill_missing(GAPPY, "moving-average", window=2)
    np.testing.assert_allclose(ma[[1, 4, 5, 8]], [1.0, 3.0, 3.0, 9.5])  # mean of the two values before
    lead = fill_missing(np.array([np.nan, np.nan, 4.0, 6.0]), "interpolate")
    np.testing.assert_allclose(lead, [4, 4, 4, 6])


def test_fill_errors():
    with pytest.raises(ValueError, match="unknown missing-value strategy"):
        fill_missing(GAPPY, "zero")
    with pytest.raises(ValueError, match="no observed values"):
        fill_missing(np.full(4, np.nan), "mean")


def test_check_column_messages():
    with pytest.raises(ValueError, match="no numeric values"):
        check_column(np.full(5, np.nan), "y", 3)
    with pytest.raises(ValueError, match="constant"):
        check_column(np.full(50, 2.0), "y", 3)
    with pytest.raises(ValueError, match="has 5 rows but at least 30"):
        check_column(np.arange(5.0), "y", 30)
    check_column(np.arange(50.0), "y", 30)


@pytest.mark.parametrize("method", ["standard", "minmax"])
@pytest.mark.parametrize("log", [False, True])
def test_scaler_round_trip_fitted_on_train_only(method, log):
    rng = np.random.default_rng(0)
    x = np.exp(rng.normal(size=200)) + 1.0
    sc = Scaler(method, log).fit(x[:150])
    z = sc.transform(x)
    np.testing.assert_allclose(sc.inverse(z), x, rtol=1e-12)
    zt = z[:150]
    if method == "standard":
        assert zt.mean() == pytest.approx(0, abs=1e-12) and zt.std() == pytest.approx(1)
    else:
        assert zt.min() == pytest.approx(0) and zt.max() == pytest.approx(1)
    again = Scaler.from_dict(sc.to_dict())
    np.testing.assert_allclose(again.transform(x), z)


def test_scaler_multi_column_and_log_error():
    x = np.column_stack([np.arange(10.0), 100 + np.arange(10.0) ** 2])
    sc = Scaler().fit(x)
    np.testing.assert_allclose(sc.inverse(sc.transform(x)), x)
    with pytest.raises(ValueError, match="strictly positive"):
        Scaler(log=True).fit(np.array([1.0, 0.0, 2.0]))


def test_windows_shapes_and_content():
    s = np.arange(20.0)
    cov = np.column_stack([s * 10, -s])
    x, y, o = make_windows(s, lookback=5, horizon=3, covariates=cov)
    assert x.shape == (20 - 5 - 3 + 1, 5, 3) and y.shape == (13, 3) and o.shape == (13,)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(x[0, :, 1], [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(y[0], [5, 6, 7])
    np.testing.assert_array_equal(y[-1], [17, 18, 19])
    x1, y1, _ = make_windows(s, 4, 1)
    assert x1.shape == (16, 4, 1) and y1.shape == (16, 1)
    with pytest.raises(ValueError, match="out of range"):
        make_windows(s, 5, 3, origins=[18])


def test_seasonal_anchor():
    h = np.arange(24.0)
    np.testing.assert_array_equal(seasonal_anchor(h, 14, 12), list(range(12, 24)) + [12, 13])
    np.testing.assert_array_equal(seasonal_anchor(h, 3, None), [23, 23, 23])
    np.testing.assert_array_equal(seasonal_anchor(np.stack([h, h + 1]), 2, 12)[1], [13, 14])


def test_period_inference():
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="MS")) == 12
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="QS")) == 4
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="W")) == 52
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="D")) == 7
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="h")) == 24
    assert infer_period(pd.date_range("2000-01-01", periods=30, freq="YS")) is None
    assert infer_period(pd.RangeIndex(30)) is None
    days = pd.bdate_range("2020-01-01", periods=40).delete([5, 17])   # trading days with holidays
    assert infer_period(pd.DatetimeIndex(list(days))) == 5
    fut = future_index(pd.date_range("2000-01-01", periods=5, freq="MS"), 2)
    assert list(fut) == [pd.Timestamp("2000-06-01"), pd.Timestamp("2000-07-01")]
    assert list(future_index(pd.RangeIndex(5), 2)) == [5, 6]


@pytest.mark.parametrize("name,period,rows", [("co2", 12, 526), ("sunspots", None, 309),
                                              ("airpassengers", 12, 144), ("msft", 5, 7983)])
def test_builtin_series_load_offline(name, period, rows):
    df = datasets.load_series(name)
    assert len(df) == rows and df.shape[1] == 1 and infer_period(df.index) == period
    if name == "co2":
        assert df.iloc[:, 0].isna().sum() == 5     # months without a single weekly reading


def test_unknown_dataset():
    with pytest.raises(ValueError, match="built-in series are co2, sunspots"):
        datasets.load_series("nile2")


def test_read_csv(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("date,y,x\n2020-03-01,3,1\n2020-01-01,1,\n2020-02-01,NA,2\n")
    df = datasets.read_series_csv(str(p), "y", "date", ["x"])
    assert list(df.columns) == ["y", "x"] and df.index.is_monotonic_increasing
    assert np.isnan(df["y"].iloc[1]) and np.isnan(df["x"].iloc[0])


@pytest.mark.parametrize("text,kwargs,match", [
    ("a,b\n1,2\n", {"target": "y"}, "has no column 'y'; columns are: a, b"),
    ("y\n1\nabc\n3\nx\n", {"target": "y"}, r"2 non-numeric values \('abc', 'x'\) on line\(s\) 3, 5"),
    ("t,y\n2020-01-01,1\n2020-01-01,2\n", {"target": "y", "time": "t"}, "repeats"),
    ("t,y\nnot a date,1\n", {"target": "y", "time": "t"}, "cannot parse time column"),
])
def test_read_csv_errors(tmp_path, text, kwargs, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        datasets.read_series_csv(str(p), **kwargs)
    with pytest.raises(ValueError, match="not found"):
        datasets.read_series_csv(str(tmp_path / "none.csv"), "y")
