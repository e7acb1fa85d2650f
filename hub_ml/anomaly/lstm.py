"""LSTM predict-next detector (PyTorch).

The network reads the last ``window`` points (transformed, standardised, and clipped to the seasonal
baseline +- ``clip_sigmas`` so that a past anomaly does not distort the next predictions) together
with the calendar of the step it predicts, and predicts the next value. The residual is scaled by the
baseline's noise model times a factor measured on the training residuals; the alarm is at
``threshold`` of those sigmas.

Reproducible: weights and batch order come from ``seed`` (plus the segment's training length, so each
refit differs from the last but is fixed by the schedule), under ``torch.random.fork_rng`` so the
caller's global RNG is untouched; on CPU the result is deterministic for a fixed thread count.
Training runs on CUDA when ``torch.cuda.is_available()`` (``device="auto"``); the fitted network is
kept on the CPU, where scoring a segment (a few hundred windows) is cheapest and pickling is portable.
Refits warm-start from the previous segment's network and train ``refit_epochs``.
``num_threads`` (default 1) is set for the detector's own work and restored after: a net this small
gains little from intra-op threads, and on a busy 2-core machine spinning threads make it 10-50x slower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hub_ml.anomaly.base import SeasonalBaseline, SegmentScores, WalkForwardDetector


class NextValueLSTM(nn.Module):
    """LSTM over (value, calendar of the next step) sequences; predicts the next value."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(windows)
        return self.head(out[:, -1, :]).squeeze(-1)


@dataclass
class _LSTMModel:
    network: NextValueLSTM
    mean: float
    std: float
    sigma_ratio: float


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class LSTMDetector(WalkForwardDetector):
    name = "lstm"
    warm_start = True

    def __init__(
        self,
        *,
        threshold: float = 7.5,
        window: int = 48,
        hidden_size: int = 32,
        num_layers: int = 1,
        epochs: int = 15,
        refit_epochs: int = 4,
        batch_size: int = 64,
        learning_rate: float = 5e-3,
        clip_sigmas: float = 3.0,
        seed: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
        max_train: int | None = 24 * 28,
        **base: Any,
    ) -> None:
        super().__init__(threshold=threshold, max_train=max_train, **base)
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.epochs = epochs
        self.refit_epochs = refit_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.clip_sigmas = clip_sigmas
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    # -- data
    def _inputs(self, values: np.ndarray, index: pd.DatetimeIndex, baseline: SeasonalBaseline):
        """Per-point model inputs (clean value + next step's calendar), raw target, expected, sigma."""
        y = baseline.forward(values[:, 0])
        expected, _ = baseline.expected(y, index)
        sigma = baseline.sigma(expected, index)
        limit = self.clip_sigmas * sigma
        clean = np.where(np.isnan(y), expected, np.clip(y, expected - limit, expected + limit))
        step = pd.Timedelta(baseline.step_ns, unit="ns")
        following = index + step
        hours = following.hour.to_numpy() + following.minute.to_numpy() / 60.0
        dow = following.dayofweek.to_numpy()
        calendar = np.column_stack(
            [
                np.sin(2 * np.pi * hours / 24),
                np.cos(2 * np.pi * hours / 24),
                np.sin(2 * np.pi * dow / 7),
                np.cos(2 * np.pi * dow / 7),
            ]
        )
        return clean, calendar, y, expected, sigma

    def _windows(self, clean_std: np.ndarray, calendar: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Input windows ending at t-1 for every t in ``targets`` (positions into the arrays)."""
        features = np.column_stack([clean_std, calendar]).astype(np.float32)
        offsets = np.arange(-self.window, 0)
        return features[targets[:, None] + offsets[None, :]]

    # -- fitting
    def _fit_model(self, values, index, baseline, previous: _LSTMModel | None):
        clean, calendar, _, expected, sigma = self._inputs(values, index, baseline)
        mean, std = float(np.mean(clean)), float(np.std(clean)) or 1.0
        clean_std = (clean - mean) / std
        targets = np.arange(self.window, len(clean))
        if len(targets) < 8:
            raise ValueError(f"LSTM needs more than window + 8 = {self.window + 8} training points")
        x = self._windows(clean_std, calendar, targets)
        t = clean_std[targets].astype(np.float32)
        # Weight errors by the baseline's noise so noisy quiet hours do not dominate the loss.
        w = ((std / sigma[targets]) ** 2).astype(np.float32)
        w = w / w.mean()

        device = resolve_device(self.device)
        seed = self.seed * 1_000_003 + len(values)
        with _threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = NextValueLSTM(x.shape[2], self.hidden_size, self.num_layers)
            epochs = self.epochs
            if previous is not None:
                network.load_state_dict(previous.network.state_dict())
                epochs = self.refit_epochs
            network = network.to(device)
            generator = torch.Generator().manual_seed(seed)
            optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
            xs, ts, ws = (torch.from_numpy(a).to(device) for a in (x, t, w))
            network.train()
            for _ in range(epochs):
                order = torch.randperm(len(xs), generator=generator).to(device)
                for batch in order.split(self.batch_size):
                    optimiser.zero_grad()
                    loss = (ws[batch] * (network(xs[batch]) - ts[batch]) ** 2).mean()
                    loss.backward()
                    nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                    optimiser.step()
            network = network.cpu().eval()
            with torch.no_grad():
                predicted = network(torch.from_numpy(x)).numpy() * std + mean
        y = baseline.forward(values[:, 0])[targets]
        ok = ~np.isnan(y)
        ratio = ((y - predicted) / baseline.sigma(predicted, index[targets]))[ok] ** 2
        sigma_ratio = float(np.sqrt(np.mean(np.minimum(ratio, 25.0)))) if ok.any() else 1.0
        return _LSTMModel(network=network, mean=mean, std=std, sigma_ratio=max(sigma_ratio, 0.5))

    def _score_segment(self, model: _LSTMModel, baseline, values, index, start) -> SegmentScores:
        clean, calendar, y, expected, _ = self._inputs(values, index, baseline)
        targets = np.arange(start, len(values))
        if start < self.window:
            # Too little context before the first points: pad with the baseline's expectation.
            pad = self.window - start
            clean = np.concatenate([np.full(pad, expected[0] if len(expected) else 0.0), clean])
            calendar = np.concatenate([np.repeat(calendar[:1], pad, axis=0), calendar])
            targets = targets + pad
        clean_std = (clean - model.mean) / model.std
        x = self._windows(clean_std, calendar, targets)
        with _threads(self.num_threads), torch.no_grad():
            predicted = model.network(torch.from_numpy(x)).numpy().astype(float) * model.std + model.mean
        sigma = baseline.sigma(predicted, index[start:]) * model.sigma_ratio
        k = self.threshold
        return SegmentScores(
            expected=predicted,
            lower=predicted - k * sigma,
            upper=predicted + k * sigma,
            deviation=(y[start:] - predicted) / (k * sigma),
        )
