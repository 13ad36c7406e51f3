"""Figures, drawn with matplotlib's non-interactive Agg backend and written to a file."""
import os
import textwrap

import numpy as np


def plot_forecast(table, path, title="", best=None, history=None):
    """Draw a forecast table (columns time, part in {history, test, future}, actual, lstm,
    lower80/upper80/lower95/upper95, and the baselines on test rows) to a PNG at path.

    Shows the recent history, the test actuals, the LSTM forecast with its 80% and 95% bands on
    the test part and the future, and the best baseline `best` on the test part. `history` is the
    number of history points drawn (default: four horizons, at least 48)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = table[table["part"] == "history"]
    test = table[table["part"] == "test"]
    fut = table[table["part"] == "future"]
    keep = history or max(48, 4 * len(test))
    hist = hist.iloc[-keep:]
    t = lambda d: d["time"].to_numpy()   # noqa: E731

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    ax.plot(t(hist), hist["actual"], color="0.25", lw=1.2, label="history")
    ax.plot(t(test), test["actual"], color="black", lw=1.6, marker="o", ms=3, label="actual (test)")
    for part, lab in ((test, "LSTM (test)"), (fut, "LSTM (future)")):
        if len(part):
            ax.fill_between(t(part), part["lower95"], part["upper95"], color="tab:blue", alpha=0.15,
                            lw=0, label="95% interval" if part is test else None)
            ax.fill_between(t(part), part["lower80"], part["upper80"], color="tab:blue", alpha=0.3,
                            lw=0, label="80% interval" if part is test else None)
            ax.plot(t(part), part["lstm"], color="tab:blue", lw=1.8, ls="-" if part is test else "--", label=lab)
    if best and best in test:
        ax.plot(t(test), test[best], color="tab:orange", lw=1.6, ls="-.", label=f"best baseline: {best}")
    if len(test):
        ax.axvline(t(test)[0], color="0.6", lw=0.8, ls=":")
    ax.set_title(textwrap.fill(title, 130), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    if not np.issubdtype(np.asarray(t(table)).dtype, np.datetime64):
        ax.set_xlabel("step")
    fig.autofmt_xdate()
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path

