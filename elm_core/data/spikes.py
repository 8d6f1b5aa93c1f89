"""Binned spike recordings stored sparsely, densified per batch."""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SpikeDigits:
    """Binned recordings of one file: sample i's spikes are the flat indices (step * n_channels + channel)
    events[offsets[i]:offsets[i + 1]]; a bin with several spikes is a single 1 once densified."""

    events: np.ndarray  # (total spikes,) int32
    offsets: np.ndarray  # (n + 1,) int64
    labels: np.ndarray  # (n,) int64
    n_steps: int
    n_channels: int

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_spikes(
        cls, sample_of_spike: np.ndarray, step: np.ndarray, channel: np.ndarray, labels: np.ndarray,
        n_steps: int, n_channels: int
    ) -> "SpikeDigits":
        """Bin per-spike (sample, time step, channel) arrays, dropping spikes outside [0, n_steps).

        The spikes must come grouped by sample in sample order (sample_of_spike non-decreasing).
        """
        inside = (step >= 0) & (step < n_steps)
        events = (step[inside] * n_channels + channel[inside]).astype(np.int32)
        counts = np.bincount(sample_of_spike[inside], minlength=len(labels))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(events, offsets, labels.astype(np.int64), n_steps, n_channels)

    def dense(self, rows: np.ndarray) -> torch.Tensor:
        """(B, k * n_steps, n_channels) uint8 0/1 spikes for rows (B, k): the k samples of a row follow in time.

        uint8, not float32: building a batch is bound by memory writes (B * T * C bytes per batch,
        a quarter of float32's), and the model's input scaling makes the float tensor anyway.
        """
        batch, per_row = rows.shape
        slot_size = self.n_steps * self.n_channels
        # One scatter into a zeroed buffer: the flat index of a spike in the (B, k*T, C) layout is
        # slot * T * C + its own (t * C + c), where slot = b * k + j enumerates the samples.
        flat = np.concatenate(
            [
                self.events[self.offsets[sample] : self.offsets[sample + 1]] + np.int64(slot * slot_size)
                for slot, sample in enumerate(rows.ravel())
            ]
        )
        # numpy's single-threaded zeroing, not torch.zeros: torch spreads it over its intra-op thread
        # pool, which stalls (5x slower measured) when the trainer or other jobs hold the cores.
        spikes = np.zeros(batch * per_row * slot_size, dtype=np.uint8)
        spikes[flat] = 1
        return torch.from_numpy(spikes).view(batch, per_row * self.n_steps, self.n_channels)


def synthetic_digits(n_samples: int, n_channels: int, n_steps: int, rng: np.random.Generator) -> SpikeDigits:
    """Ten spike 'digits': digit d fires the channels c with c mod 10 == d at rate 0.5 per step,
    every channel fires at 0.02 as background noise."""
    labels = rng.integers(0, 10, n_samples)
    digit_channels = (np.arange(n_channels)[None, :] % 10) == labels[:, None]  # (n, C)
    rate = np.where(digit_channels[:, None, :], 0.5, 0.02)  # (n, 1, C)
    sample, step, channel = np.nonzero(rng.random((n_samples, n_steps, n_channels)) < rate)
    return SpikeDigits.from_spikes(sample, step, channel, labels, n_steps, n_channels)
