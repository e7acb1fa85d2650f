"""LSTM forecaster (PyTorch): multi-step direct output, one season per block.

Design, chosen so a small network trains in seconds on two CPU cores from 90 days of data:
- the input window (two weeks hourly, four weeks daily, on the log scale) is cut into patches of one
  short season (a day of hours, a week of days); the LSTM reads the sequence of patches, so it runs
  14 steps instead of 336;
- it outputs a whole block (the longest season: 168 hours or 7 days) directly; longer horizons feed
  each block back as input for the next;
- it predicts a correction to a seasonal baseline (the average of the same phase over the input
  window) with its output layer initialised to zero, so an undertrained network degrades to a
  smoothed seasonal naive forecast instead of to noise.
Training is seeded (torch, the shuffling generator) and runs on CUDA when available, else CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hub_ml.forecast.base import Forecaster, z_value
from hub_ml.forecast.series import LogTransform

MIN_TRAINING_WINDOWS = 4


class _TorchThreads:
    """Run torch single-threaded inside the block, restoring the setting after.

    A network this small spends more time synchronising intra-op threads than computing: on the
    2-vCPU hub machine one thread trains 5-15x faster than two.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.saved)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LstmForecaster(Forecaster):
    """Patch-LSTM with a direct multi-step head; see the module docstring for the design."""

    name = "lstm"

    def __init__(
        self,
        *,
        seasonal_periods: tuple[int, ...] | None = None,
        outlier_limit: float | None = None,
        lookback_seasons: int | None = None,
        hidden_size: int = 32,
        num_layers: int = 1,
        epochs: int = 30,
        batch_size: int = 128,
        learning_rate: float = 3e-3,
        max_windows: int = 1500,
        seed: int = 0,
        device: str = "auto",
        torch_threads: int | None = 1,
        transform: str = "auto",
    ) -> None:
        super().__init__(seasonal_periods=seasonal_periods, outlier_limit=outlier_limit)
        self.lookback_seasons = lookback_seasons
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_windows = max_windows
        self.seed = seed
        self.device = device
        self.torch_threads = torch_threads
        self.transform = transform

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def patch(self) -> int:
        return self.short_period

    @property
    def block(self) -> int:
        return self.season_length

    @property
    def lookback(self) -> int:
        seasons = self.lookback_seasons
        if seasons is None:
            # At least eight patches for the LSTM to read: 2 weeks of hours, 4 weeks of days.
            seasons = 2 if 2 * self.block // self.patch >= 8 else 4
        lookback = seasons * self.block
        return lookback - lookback % self.patch

    def min_length(self) -> int:
        return self.lookback + self.block + MIN_TRAINING_WINDOWS - 1

    def length_requirement(self) -> str:
        return (
            f"a {self.lookback}-step input window and a {self.block}-step output block for seasonal "
            f"periods {self._periods_in_use or '(none)'}, {MIN_TRAINING_WINDOWS} training windows at least"
        )

    # -- windows ----------------------------------------------------------------------------------
    def _baseline(self, window: np.ndarray) -> np.ndarray:
        """Per output step, the mean of the same seasonal phase over the window (rows = windows)."""
        m, lookback = self.block, window.shape[1]
        seasons = lookback // m
        recent = window[:, lookback - seasons * m :]
        return recent.reshape(len(window), seasons, m).mean(axis=1)

    def _inputs(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Level-normalised patches, the normalised baseline, and the level (rows = windows)."""
        level = windows.mean(axis=1, keepdims=True)
        normalised = windows - level
        patches = normalised.reshape(len(windows), -1, self.patch)
        return patches, self._baseline(normalised), level

    def _training_windows(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        span = self.lookback + self.block
        starts = np.arange(0, len(z) - span + 1)
        if len(starts) > self.max_windows:
            # Keep an even spread, always including the most recent window.
            starts = starts[np.linspace(0, len(starts) - 1, self.max_windows).round().astype(int)]
        windows = np.stack([z[s : s + span] for s in starts])
        return windows[:, : self.lookback], windows[:, self.lookback :]

    # -- fit / predict ----------------------------------------------------------------------------
    def _build_network(self):
        import torch
        from torch import nn

        patch, hidden, layers, block = self.patch, self.hidden_size, self.num_layers, self.block

        class PatchLstm(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(patch, hidden, num_layers=layers, batch_first=True)
                self.head = nn.Linear(hidden, block)
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)

            def forward(self, patches: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
                output, _ = self.lstm(patches)
                return baseline + self.head(output[:, -1, :])

        return PatchLstm()

    def _threads(self):
        import contextlib

        return _TorchThreads(self.torch_threads) if self.torch_threads else contextlib.nullcontext()

    def _fit(self, y: pd.Series) -> None:
        with self._threads():
            self._train(y)

    def _train(self, y: pd.Series) -> None:
        import torch

        self.transform_ = LogTransform.for_values(y.to_numpy(), self.transform)
        z = self.transform_.forward(y.to_numpy())
        # One global scale so patches are O(1) whatever the units; the level is removed per window.
        self.scale_ = float(np.std(z)) or 1.0
        z = z / self.scale_
        device = _resolve_device(self.device)
        torch.manual_seed(self.seed)
        shuffler = torch.Generator().manual_seed(self.seed)

        inputs, targets = self._training_windows(z)
        patches, baseline, level = self._inputs(inputs)
        target = targets - level
        tensors = [
            torch.as_tensor(a, dtype=torch.float32, device=device) for a in (patches, baseline, target)
        ]
        network = self._build_network().to(device)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        loss_fn = torch.nn.MSELoss()
        n = len(target)
        network.train()
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=shuffler).to(device)
            for start in range(0, n, self.batch_size):
                batch = order[start : start + self.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(network(tensors[0][batch], tensors[1][batch]), tensors[2][batch])
                loss.backward()
                optimiser.step()
        network.eval()
        with torch.no_grad():
            fitted = network(tensors[0], tensors[1]).cpu().numpy()
        # Per output step spread of the training residuals, for the model's own interval.
        self.residual_sd_ = np.sqrt(np.mean((target - fitted) ** 2, axis=0)) * self.scale_
        self.state_dict_ = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        self.history_ = z[-self.lookback :].copy()
        self._network = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_network"] = None  # rebuilt from state_dict_ on first use
        return state

    def _network_for_inference(self):
        if getattr(self, "_network", None) is None:
            network = self._build_network()
            network.load_state_dict(self.state_dict_)
            network.eval()
            self._network = network
        return self._network

    def _predict(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._threads():
            return self._roll_forward(horizon, level)

    def _roll_forward(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        network = self._network_for_inference()
        history = self.history_.copy()
        blocks = []
        with torch.no_grad():
            while sum(len(b) for b in blocks) < horizon:
                window = history[-self.lookback :][None, :]
                patches, baseline, window_level = self._inputs(window)
                out = (
                    network(
                        torch.as_tensor(patches, dtype=torch.float32),
                        torch.as_tensor(baseline, dtype=torch.float32),
                    ).numpy()[0]
                    + window_level[0, 0]
                )
                blocks.append(out)
                history = np.concatenate([history, out])
        center = np.concatenate(blocks)[:horizon] * self.scale_
        steps = np.arange(horizon)
        # Iterated blocks compound their errors: widen with the square root of the block count.
        sd = self.residual_sd_[steps % self.block] * np.sqrt(steps // self.block + 1)
        half = z_value(level) * sd
        inverse = self.transform_.inverse
        return inverse(center), inverse(center - half), inverse(center + half)
