"""Weighted-vote ensemble of walk-forward detectors, with severity, confidence and an explanation.

Weights (``AnomalyEnsemble.fit``): the history before the scored series is split in time; each
detector is fitted on the first part and scores the last ``validation_fraction`` of it, walk-forward.
Its weight is its validation precision, Laplace-smoothed, ``(TP + 1) / (TP + FP + 2)``, window-based
(``hub_ml.anomaly.evaluation``):

* with ``labels`` (windows) given, against the labelled windows inside the validation part
  (``weight_source == "labels"``);
* without labels, against a self-supervised proxy: spikes, drops and level shifts of the generator
  spec's magnitudes are planted into a copy of the validation part (``hub_ml.anomaly.synthetic.
  inject_anomalies``) and flags are judged against the planted windows (``"injected"``). Real,
  unlabelled anomalies in that part count against every detector alike;
* when the history is too short to hold out a validation part, equal weights (``"uniform"``).

Weights are a function of the history strictly before the scored series, like the detectors'
models, so the ensemble is walk-forward too: if ``score`` gets a series that starts inside the fitted
history, weights are recomputed from the part before it.

Verdict per point (soft weighted voting by role): every detector with a verdict votes with its
score, which is 0.5 exactly at its own alarm threshold and approaches 1 far beyond it. Detectors vote
among those of their ``role``: "point" detectors (z-score, IQR, seasonal residual, Isolation Forest,
LSTM) judge each point, the "sustained" EWMA chart is built to ignore single points and alarm on
shifts and ramps. A role's score is the weighted mean of its members' votes; the ensemble ``score``
is the highest role score and ``is_anomaly`` is ``score >= vote_threshold`` (default 0.5: the weighted
detector of that role is at its threshold). Averaging a spike specialist with a shift specialist
would let each dilute the other; within a role a soft vote lets strong evidence carry detectors close
to their thresholds while noise that barely crosses one detector's threshold is outvoted.
A sustained role has one member in the default ensemble, so its alarms would pass without a vote: a
run of its flags counts only from the first point of the run where the point role corroborates it,
with a weighted score of at least ``corroboration`` (default 0.2, the point detectors a quarter of
the way to their thresholds; causal, so the verdict of a point never depends on later ones). A real
shift or drop moves the residual detectors that far while it lasts; a chart drifting past its limit
because the level it was fitted on has gone stale does not. Uncorroborated points keep a role score
just below ``vote_threshold``.
``detected_by`` lists the detectors whose own verdict is an anomaly (never empty for a flagged point:
a weighted mean >= 0.5 needs one vote >= 0.5); ``confidence`` is the weighted share of the deciding
role's detectors whose own verdict agrees with the ensemble's;
``expected``, ``lower``, ``upper`` are weighted medians of the detectors' values. Severity is the higher
of a statistical level, from the ensemble deviation ``score / (1 - score)`` (1 at the threshold: < 1.5
low, < 2.5 medium, < 4 high, else critical), and a business level from value / expected (or its
inverse for drops: < 1.5x low, < 2x medium, < 4x high, else critical).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from hub_ml.anomaly.base import EXTRA_COLUMNS, OUTPUT_COLUMNS, WalkForwardDetector, as_utc_frame
from hub_ml.anomaly.evaluation import DEFAULT_TOLERANCE, Window, WindowMetrics, evaluate_windows
from hub_ml.anomaly.isolation_forest import IsolationForestDetector
from hub_ml.anomaly.lstm import LSTMDetector
from hub_ml.anomaly.statistical import (
    EWMAControlChartDetector,
    IQRDetector,
    RollingZScoreDetector,
    SeasonalResidualDetector,
)
from hub_ml.anomaly.synthetic import inject_anomalies

SEVERITY_LEVELS = ("low", "medium", "high", "critical")
#: Point-role score that lets a run of sustained-role alarms count (see the module docstring).
DEFAULT_CORROBORATION = 0.2
SEVERITY_CUTS = (1.5, 2.5, 4.0)
RATIO_CUTS = (1.5, 2.0, 4.0)
RECORD_COLUMNS = [
    "timestamp",
    "series_key",
    "value",
    "expected",
    "lower",
    "upper",
    "score",
    "severity",
    "confidence",
    "detected_by",
    "explanation",
]


def default_detectors() -> list[WalkForwardDetector]:
    """One of each detector. Thresholds are their defaults except where the ensemble's F1 on the
    generator's labels was best with a member stricter than it should be alone (z-score, IQR, LSTM:
    they mostly echo the seasonal detector, so in the vote they only need to speak when sure)."""
    return [
        RollingZScoreDetector(threshold=10.0),
        IQRDetector(threshold=7.0),
        EWMAControlChartDetector(),
        SeasonalResidualDetector(),
        IsolationForestDetector(),
        LSTMDetector(threshold=8.5),
    ]


@dataclass(frozen=True)
class AnomalyRecord:
    """One flagged point, as published to alerts and the anomalies table."""

    timestamp: pd.Timestamp
    series_key: str
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    severity: str
    confidence: float
    detected_by: tuple[str, ...]
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["detected_by"] = list(self.detected_by)
        return record


@dataclass(frozen=True)
class DetectorValidation:
    """How a detector did on the validation part; ``weight`` is what its vote counts."""

    name: str
    metrics: WindowMetrics
    weight: float


def severity_of(strength: float, ratio: float | None = None) -> str:
    """Severity: the higher of the statistical level (ensemble deviation, 1 = at threshold: < 1.5
    low, < 2.5 medium, < 4 high, else critical) and the business level (how many times the expected
    value, or its inverse for a drop: < 1.5 low, < 2 medium, < 4 high, else critical)."""

    def level(value: float, cuts: tuple[float, ...]) -> int:
        return next((i for i, cut in enumerate(cuts) if value < cut), len(cuts))

    rank = level(strength, SEVERITY_CUTS) if np.isfinite(strength) else 0
    if ratio is not None and np.isfinite(ratio) and ratio > 0:
        rank = max(rank, level(max(ratio, 1.0 / ratio), RATIO_CUTS))
    return SEVERITY_LEVELS[rank]


def format_number(value: float) -> str:
    """Readable magnitude: 4,310 / 12.5 / 0.0123."""
    if value is None or not np.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def explain(
    metric: str,
    timestamp: pd.Timestamp,
    value: float,
    expected: float,
    lower: float,
    upper: float,
    detected_by: Sequence[str],
) -> str:
    """One sentence: what, when, how far from normal, who said so."""
    when = pd.Timestamp(timestamp).strftime("%Y-%m-%d %H:%M UTC")
    if np.isfinite(expected) and expected != 0 and np.sign(expected) == np.sign(value or expected):
        relation = f"is {value / expected:.1f}x the expected {format_number(expected)}"
    else:
        relation = f"against an expected {format_number(expected)}"
    voters = ", ".join(detected_by) if detected_by else "no detector"
    return (
        f"{metric} {format_number(value)} at {when} {relation} "
        f"(range {format_number(lower)}-{format_number(upper)}); flagged by {voters}"
    )


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted median of ``values`` (rows x detectors), ignoring NaN."""
    out = np.full(values.shape[0], np.nan)
    for i, row in enumerate(values):
        ok = ~np.isnan(row) & (weights > 0)
        if not ok.any():
            continue
        order = np.argsort(row[ok])
        sorted_values, sorted_weights = row[ok][order], weights[ok][order]
        cumulative = np.cumsum(sorted_weights)
        out[i] = sorted_values[np.searchsorted(cumulative, cumulative[-1] / 2.0)]
    return out


def _corroborated(
    scores: np.ndarray, point_score: np.ndarray, vote_threshold: float, corroboration: float
) -> np.ndarray:
    """``scores`` of a sustained role with its uncorroborated alarms held just below the threshold: in
    each run of points at or above ``vote_threshold``, those before the first point where
    ``point_score >= corroboration``."""
    flagged = np.nan_to_num(scores, nan=0.0) >= vote_threshold
    if not flagged.any():
        return scores
    seen = point_score >= corroboration
    run_start = flagged & ~np.concatenate([[False], flagged[:-1]])
    # Corroborated so far in this run: a running count of corroborating points per run.
    count = np.cumsum(seen & flagged)
    count_at_start = np.maximum.accumulate(np.where(run_start, count - (seen & flagged), 0))
    ok = flagged & (count - count_at_start > 0)
    held = np.nextafter(vote_threshold, 0.0)
    return np.where(flagged & ~ok, np.minimum(scores, held), scores)


def combine(
    outputs: dict[str, pd.DataFrame],
    weights: dict[str, float],
    *,
    roles: dict[str, str] | None = None,
    vote_threshold: float = 0.5,
    metric: str = "value",
    corroboration: float = DEFAULT_CORROBORATION,
) -> pd.DataFrame:
    """Ensemble frame from per-detector ``score`` frames (same index), their weights and roles.

    Detectors vote within their role (``WalkForwardDetector.role``: "point" or "sustained") with
    their scores, weighted; a role flags a point when its weighted mean score reaches
    ``vote_threshold``; the ensemble flags it when any role does, and its score is the highest role
    score. Runs of flags of a role other than "point" count from their first point where the point
    role's score reaches ``corroboration`` (0 turns this off; so does having no point detector).
    """
    names = list(outputs)
    first = outputs[names[0]]
    index = first.index
    w = np.array([weights.get(n, 0.0) for n in names], dtype=float)
    role_of = np.array([(roles or {}).get(n, "point") for n in names])

    def stack(column: str) -> np.ndarray:
        return np.column_stack([outputs[n][column].to_numpy(dtype=float) for n in names])

    scores = stack("score")
    votes = np.column_stack([outputs[n]["is_anomaly"].to_numpy(dtype=bool) for n in names])
    has_verdict = ~np.isnan(scores)
    role_scores, role_shares = [], []
    roles_in_order = list(dict.fromkeys(role_of))
    for role in roles_in_order:
        member = (role_of == role) * w
        active = (has_verdict * member).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            role_scores.append(
                np.where(active > 0, (np.nan_to_num(scores) * member).sum(axis=1) / active, np.nan)
            )
            role_shares.append(
                np.where(active > 0, (votes * has_verdict * member).sum(axis=1) / active, np.nan)
            )
    if "point" in roles_in_order and corroboration > 0:
        point_score = np.nan_to_num(role_scores[roles_in_order.index("point")], nan=0.0)
        for r, role in enumerate(roles_in_order):
            if role != "point":
                role_scores[r] = _corroborated(role_scores[r], point_score, vote_threshold, corroboration)
    role_scores_arr = np.column_stack(role_scores)
    role_shares_arr = np.column_stack(role_shares)
    deciding = np.argmax(np.nan_to_num(role_scores_arr, nan=-1.0), axis=1)
    rows = np.arange(len(index))
    score = role_scores_arr[rows, deciding]
    share = role_shares_arr[rows, deciding]
    is_anomaly = np.nan_to_num(score, nan=0.0) >= vote_threshold
    confidence = np.where(is_anomaly, share, 1.0 - share)
    value = first["value"].to_numpy(dtype=float)
    expected = _weighted_median(stack("expected"), w)
    lower = _weighted_median(stack("lower"), w)
    upper = _weighted_median(stack("upper"), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        strength = score / (1.0 - np.minimum(score, 1 - 1e-9))

    detected_by: list[list[str]] = []
    severity: list[str | None] = []
    explanation: list[str | None] = []
    for i in range(len(index)):
        voters = [n for n, v in zip(names, votes[i], strict=True) if v]
        detected_by.append(voters)
        if is_anomaly[i]:
            ratio = value[i] / expected[i] if value[i] > 0 and expected[i] > 0 else None
            severity.append(severity_of(float(strength[i]), ratio))
            explanation.append(explain(metric, index[i], value[i], expected[i], lower[i], upper[i], voters))
        else:
            severity.append(None)
            explanation.append(None)
    frame = pd.DataFrame(
        {
            "value": value,
            "score": score,
            "lower": lower,
            "upper": upper,
            "is_anomaly": is_anomaly,
            "expected": expected,
            "deviation": np.where(is_anomaly, strength, np.nan),
            "confidence": confidence,
            "vote_share": share,
            "severity": severity,
            "detected_by": detected_by,
            "explanation": explanation,
        },
        index=index,
    )
    for n in names:
        frame[f"score_{n}"] = outputs[n]["score"].to_numpy(dtype=float)
    return frame


class AnomalyEnsemble:
    """Weighted voting over walk-forward detectors (see the module docstring for the rules)."""

    def __init__(
        self,
        detectors: Sequence[WalkForwardDetector] | Callable[[], Sequence[WalkForwardDetector]] | None = None,
        *,
        vote_threshold: float = 0.5,
        validation_fraction: float = 0.3,
        min_validation: int = 72,
        tolerance: pd.Timedelta = DEFAULT_TOLERANCE,
        seed: int = 0,
        metric: str | None = None,
        corroboration: float = DEFAULT_CORROBORATION,
    ) -> None:
        if callable(detectors):
            detectors = detectors()
        self.detectors: list[WalkForwardDetector] = list(detectors or default_detectors())
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        if not 0 < vote_threshold <= 1:
            raise ValueError("vote_threshold must be in (0, 1]")
        if not 0 <= corroboration < 1:
            raise ValueError("corroboration must be in [0, 1)")
        self.vote_threshold = vote_threshold
        self.corroboration = corroboration
        self.validation_fraction = validation_fraction
        self.min_validation = min_validation
        self.tolerance = tolerance
        self.seed = seed
        self.metric = metric
        self._history: pd.DataFrame | None = None
        self._labels: list[Window] | None = None
        self._validation_cache: dict[str, tuple[str, list[DetectorValidation]]] = {}
        self._fit_key: str | None = None

    # -- fitting
    def fit(self, history: pd.Series | pd.DataFrame, labels: Sequence[Window] | None = None) -> Self:
        """Weigh the detectors on a validation part of ``history`` and fit each on all of it.

        ``labels``: known anomaly windows ``(start, end)`` in the history, or None (self-supervised).
        """
        frame = as_utc_frame(history)
        if self.metric is None:
            self.metric = str(frame.columns[0])
        self._history = frame
        self._labels = [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in labels] if labels is not None else None
        self._validation_cache.clear()
        self._fit_key = _key(frame)
        self._validation_cache[self._fit_key] = self._validate(frame)
        for detector in self.detectors:
            detector.fit(frame)
        return self

    @property
    def roles(self) -> dict[str, str]:
        return {d.name: d.role for d in self.detectors}

    @property
    def weight_source(self) -> str:
        return self._validation_for_fit()[0]

    @property
    def validation(self) -> list[DetectorValidation]:
        return self._validation_for_fit()[1]

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.validation}

    def _validation_for_fit(self) -> tuple[str, list[DetectorValidation]]:
        if self._fit_key is None:
            raise RuntimeError("AnomalyEnsemble is not fitted")
        return self._validation_cache[self._fit_key]

    def _validate(self, history: pd.DataFrame) -> tuple[str, list[DetectorValidation]]:
        n = len(history)
        n_val = int(round(n * self.validation_fraction))
        min_train = max(d._min_train() for d in self.detectors)
        if n_val < self.min_validation or n - n_val < min_train:
            return "uniform", [DetectorValidation(d.name, WindowMetrics(), 1.0) for d in self.detectors]
        train, validation = history.iloc[: n - n_val], history.iloc[n - n_val :]
        if self._labels is not None:
            source = "labels"
            windows = [
                (s, e) for s, e in self._labels if e > validation.index[0] and s <= validation.index[-1]
            ]
            scored = validation
        else:
            source = "injected"
            rng = np.random.default_rng(self.seed)
            target = validation.columns[0]
            injected, windows = inject_anomalies(validation[target], rng, every=30, margin=6)
            scored = validation.copy()
            scored[target] = injected
        results = []
        for detector in self.detectors:
            verdicts = detector.clone().fit(train).score(scored)
            metrics = evaluate_windows(verdicts["is_anomaly"], windows, tolerance=self.tolerance)
            weight = (metrics.true_positives + 1) / (metrics.true_positives + metrics.false_positives + 2)
            results.append(DetectorValidation(detector.name, metrics, weight))
        return source, results

    # -- scoring
    def _weights_for(self, start: pd.Timestamp) -> dict[str, float]:
        history = self._history
        if history is None:
            raise RuntimeError("AnomalyEnsemble.score called before fit")
        context = history[history.index < start]
        if len(context) == len(history):
            return self.weights
        key = _key(context)
        if key not in self._validation_cache:
            self._validation_cache[key] = self._validate(context)
        return {v.name: v.weight for v in self._validation_cache[key][1]}

    def score_detectors(self, series: pd.Series | pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Each detector's walk-forward frame for ``series``."""
        return {d.name: d.score(series) for d in self.detectors}

    def score(self, series: pd.Series | pd.DataFrame) -> pd.DataFrame:
        """Per-point ensemble frame: the detector columns plus confidence, vote_share, severity,
        detected_by, explanation and each detector's ``score_<name>``."""
        frame = as_utc_frame(series)
        if len(frame) == 0:
            empty = pd.DataFrame(columns=[*OUTPUT_COLUMNS, *EXTRA_COLUMNS], index=frame.index)
            return empty.astype({"is_anomaly": bool})
        outputs = self.score_detectors(frame)
        weights = self._weights_for(frame.index[0])
        return combine(
            outputs,
            weights,
            roles=self.roles,
            vote_threshold=self.vote_threshold,
            metric=self.metric or "value",
            # Ensembles pickled before the option existed combine as they did then.
            corroboration=getattr(self, "corroboration", 0.0),
        )

    def detect(self, series: pd.Series | pd.DataFrame, series_key: str = "") -> list[AnomalyRecord]:
        """The flagged points of ``series`` as records."""
        scored = self.score(series)
        return records_from_scores(scored, series_key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Keep only the fit-time validation: the rest is a cache.
        state["_validation_cache"] = {k: v for k, v in self._validation_cache.items() if k == self._fit_key}
        return state


def records_from_scores(scored: pd.DataFrame, series_key: str) -> list[AnomalyRecord]:
    flagged = scored[scored["is_anomaly"]]
    return [
        AnomalyRecord(
            timestamp=ts,
            series_key=series_key,
            value=float(row.value),
            expected=float(row.expected),
            lower=float(row.lower),
            upper=float(row.upper),
            score=float(row.score),
            severity=str(row.severity),
            confidence=float(row.confidence),
            detected_by=tuple(row.detected_by),
            explanation=str(row.explanation),
        )
        for ts, row in flagged.iterrows()
    ]


def records_frame(records: Sequence[AnomalyRecord]) -> pd.DataFrame:
    """Records as a frame with ``RECORD_COLUMNS`` (empty frame with those columns when none)."""
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_COLUMNS})
    return pd.DataFrame([r.as_dict() for r in records], columns=RECORD_COLUMNS)


def _key(frame: pd.DataFrame) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype=float)).tobytes())
    digest.update(np.ascontiguousarray(frame.index.asi8).tobytes())
    return digest.hexdigest()
