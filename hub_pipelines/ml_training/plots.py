"""Charts of the ML steps as PNG bytes (matplotlib, headless), for MLflow artifacts and asset metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi: int) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """The PNG inline in markdown (what the Dagster UI renders in asset metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def evaluation_plot(
    title: str,
    scored: pd.DataFrame,
    windows: Sequence[tuple[pd.Timestamp, pd.Timestamp]],
    *,
    history: pd.Series | None = None,
    dpi: int = 80,
) -> bytes:
    """The held-out evaluation of an anomaly ensemble: the series, its expected range, the flagged
    points and the anomaly windows it was judged against (labels or planted ones)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if history is not None and len(history):
        ax.plot(history.index, history.to_numpy(dtype=float), color="0.65", lw=0.8, label="training data")
    index = scored.index
    ax.fill_between(
        index,
        scored["lower"].to_numpy(dtype=float),
        scored["upper"].to_numpy(dtype=float),
        color="tab:blue",
        alpha=0.15,
        label="expected range",
    )
    ax.plot(index, scored["value"].to_numpy(dtype=float), color="tab:blue", lw=1.0, label="held-out data")
    flagged = scored[scored["is_anomaly"].astype(bool)]
    if len(flagged):
        ax.scatter(flagged.index, flagged["value"].to_numpy(dtype=float), color="tab:red", s=14, zorder=3,
                   label="flagged")  # fmt: skip
    for i, (start, end) in enumerate(windows):
        ax.axvspan(start, end, color="tab:orange", alpha=0.25, label="anomaly window" if i == 0 else None)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=5)
    ax.tick_params(labelsize=7)
    return _png(fig, dpi)


def forecast_plot(
    panels: Sequence[tuple[str, pd.Series, pd.DataFrame]],
    *,
    dpi: int = 72,
    columns: int = 2,
) -> bytes:
    """History, forecast and 95% band, one panel per (title, history, forecast frame with
    timestamp/forecast/lower/upper)."""
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (title, history, forecast) in zip(axes.ravel(), panels, strict=False):
        ax.plot(history.index, history.to_numpy(dtype=float), color="0.35", lw=0.8, label="history")
        ts = pd.DatetimeIndex(forecast["timestamp"])
        ax.fill_between(
            ts, forecast["lower"], forecast["upper"], color="tab:green", alpha=0.2, label="95% band"
        )
        ax.plot(ts, forecast["forecast"], color="tab:green", lw=1.2, label="forecast")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig, dpi)
