"""Window-based precision, recall and F1 of detections against labelled anomaly windows.

Rules (what the project's acceptance is measured with):

* A labelled window ``[start, end)`` counts once as detected (a true positive) when at least one
  flagged point falls in ``[start, end + tolerance)``; otherwise it is missed (a false negative).
  ``tolerance`` (default 3 hours, ``DEFAULT_TOLERANCE``) accepts a causal detector's alarm an hour or
  two after a short anomaly, or its echo as the series settles back.
* Flagged points outside every extended window are false positives; consecutive flagged points (no
  unflagged point of the series between them) are merged into one false-positive event.
* precision = TP / (TP + FP events), recall = TP / (TP + FN); F1 their harmonic mean. With nothing
  flagged precision is 1 by convention (no false alarm was raised), with no windows recall is 1.

Results add up (``WindowMetrics.__add__``) so many series pool into micro-averaged figures.

Two ways to count a generator label that names several metrics (``metrics``):

* per metric (``evaluate_windows`` on each metric series): one window per (label, metric), so a drop
  must be found in requests, tokens, spend and errors alike to be fully recalled;
* per label (``evaluate_labels``): a label is detected when any metric it names is flagged inside
  its window, which is what an operator experiences as "the incident was caught". False positives are
  counted on every evaluated metric series in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_TOLERANCE = pd.Timedelta(hours=3)
Window = tuple[pd.Timestamp, pd.Timestamp]


@dataclass(frozen=True)
class WindowMetrics:
    true_positives: int = 0
    false_negatives: int = 0
    false_positives: int = 0

    @property
    def windows(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.windows if self.windows else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: WindowMetrics) -> WindowMetrics:
        return WindowMetrics(
            self.true_positives + other.true_positives,
            self.false_negatives + other.false_negatives,
            self.false_positives + other.false_positives,
        )

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}precision": self.precision,
            f"{prefix}recall": self.recall,
            f"{prefix}f1": self.f1,
            f"{prefix}true_positives": float(self.true_positives),
            f"{prefix}false_negatives": float(self.false_negatives),
            f"{prefix}false_positive_events": float(self.false_positives),
        }


def _utc(ts: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def evaluate_windows(
    flags: pd.Series,
    windows: Iterable[Window],
    *,
    tolerance: pd.Timedelta = DEFAULT_TOLERANCE,
) -> WindowMetrics:
    """Score boolean ``flags`` (DatetimeIndex) against ``windows`` by the rules in the module docstring.

    Only windows that overlap the flags' time span are counted, so scoring part of a series is fair.
    """
    flags = flags.fillna(False).astype(bool).sort_index()
    index = flags.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError("flags need a DatetimeIndex")
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    flagged = flags.to_numpy()
    if len(index) == 0:
        return WindowMetrics()
    first, last = index[0], index[-1]
    in_any_window = np.zeros(len(index), dtype=bool)
    tp = fn = 0
    for start, end in windows:
        start, end = _utc(start), _utc(end)
        if end <= first or start > last:
            continue
        inside = (index >= start) & (index < end + tolerance)
        in_any_window |= inside
        if flagged[inside].any():
            tp += 1
        else:
            fn += 1
    outside = flagged & ~in_any_window
    # Count runs of consecutive flagged-outside points.
    starts = outside & ~np.concatenate([[False], outside[:-1]])
    return WindowMetrics(tp, fn, int(starts.sum()))


def label_windows(
    labels: Sequence[Mapping],
    *,
    metric: str,
    tenant_id: str | None = None,
    model: str | None = None,
) -> list[Window]:
    """Windows of the generator's labels that name ``metric`` and concern this (tenant, model) series.

    A label with ``model`` null concerns every model of its tenant.
    """
    windows = []
    for label in labels:
        if metric not in label.get("metrics", ()):
            continue
        if tenant_id is not None and label.get("tenant_id") not in (None, tenant_id):
            continue
        if model is not None and label.get("model") not in (None, model):
            continue
        windows.append((_utc(label["start"]), _utc(label["end"])))
    return windows


def evaluate_labels(
    flags_by_metric: Mapping[str, pd.Series],
    labels: Sequence[Mapping],
    *,
    tolerance: pd.Timedelta = DEFAULT_TOLERANCE,
) -> WindowMetrics:
    """Per-label figures for one series key (e.g. a (tenant, model)) scored on several metrics.

    ``labels`` are the generator's labels of that series key. A label counts once: detected when a
    metric it names (among ``flags_by_metric``) has a flag in ``[start, end + tolerance)``. False
    positives are the merged runs of flags, per metric, outside the windows of labels naming it.
    """
    tp = fn = fp = 0
    for label in labels:
        start, end = _utc(label["start"]), _utc(label["end"])
        named = [m for m in label.get("metrics", ()) if m in flags_by_metric]
        if not named:
            continue
        spans = [flags_by_metric[m].index for m in named]
        if all(end <= s[0] or start > s[-1] for s in spans if len(s)):
            continue
        hit = False
        for metric in named:
            flags = flags_by_metric[metric].fillna(False).astype(bool)
            inside = (flags.index >= start) & (flags.index < end + tolerance)
            hit = hit or bool(flags.to_numpy()[inside].any())
        tp, fn = (tp + 1, fn) if hit else (tp, fn + 1)
    for metric, flags in flags_by_metric.items():
        windows = label_windows(labels, metric=metric)
        fp += evaluate_windows(flags, windows, tolerance=tolerance).false_positives
    return WindowMetrics(tp, fn, fp)


def evaluate_detectors(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    labels: Sequence[Mapping],
    history_points: int,
    seed: int = 0,
) -> dict[str, tuple[WindowMetrics, WindowMetrics]]:
    """The default ensemble and each of its detectors judged on one labelled series group.

    For every metric column of ``frame`` (time-indexed), an ensemble is fitted on the first
    ``history_points`` rows and scores the rest walk-forward. Returns, per detector and for
    ``"ensemble"``, the per-label reading (``evaluate_labels`` over the metrics) and the
    per-(label, metric) window reading. A top-level function, so a process pool can run it."""
    from hub_ml.anomaly.ensemble import AnomalyEnsemble, combine

    flags: dict[str, dict[str, pd.Series]] = {}
    for metric in metrics:
        series = frame[metric].astype(float)
        ensemble = AnomalyEnsemble(seed=seed).fit(series.iloc[:history_points])
        outputs = ensemble.score_detectors(series.iloc[history_points:])
        combined = combine(outputs, ensemble.weights, roles=ensemble.roles)
        flags.setdefault("ensemble", {})[metric] = combined["is_anomaly"]
        for name, out in outputs.items():
            flags.setdefault(name, {})[metric] = out["is_anomaly"]
    result = {}
    for name, by_metric in flags.items():
        per_metric = WindowMetrics()
        for metric, flagged in by_metric.items():
            per_metric = per_metric + evaluate_windows(flagged, label_windows(labels, metric=metric))
        result[name] = (evaluate_labels(by_metric, labels), per_metric)
    return result
