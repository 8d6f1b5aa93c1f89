"""Task objects the trainer iterates: contiguous-stream LM batches and spike-classification batches."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from elm_core.data.errors import DatasetError
from elm_core.data.spikes import SpikeDigits

EVAL_SPLITS = ("valid", "test")


@dataclass
class Batch:
    """One training or evaluation batch.

    LM: inputs and targets are (B, T) int64 ids, targets[:, t] = inputs[:, t + 1] in the text;
    `continues` is True when row i goes on exactly where row i of the previous batch ended,
    so the trainer may carry the hidden state; `position` is the offset of inputs[:, 0]
    inside each row's stream. Classification: inputs (B, T, C) uint8 0/1 spikes (cast to float on
    the device), targets (B,) int64 labels, `continues` always False. `epoch` counts passes over
    the training data.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    continues: bool = False
    position: int = 0
    epoch: int = 0


@dataclass
class Task(ABC):
    """A dataset with its metric: the trainer sizes the model from n_input/n_output and iterates batches.

    kind, metric and metric_mode belong to the class, so they are known from a task's name without its data.
    """

    kind: ClassVar[Literal["lm", "classification"]]
    metric: ClassVar[Literal["bpc", "accuracy"]]
    metric_mode: ClassVar[Literal["min", "max"]]  # the direction in which the metric improves
    name: str
    n_input: int  # vocabulary size (LM) or input channels (spikes)
    n_output: int  # vocabulary size (LM) or classes

    @abstractmethod
    def train_batches(self, batch_size: int, seq_len: int, seed: int, start_step: int = 0) -> Iterator[Batch]:
        """Endless training batches, reproducible for a seed.

        start_step skips that many batches without building them (resuming from a checkpoint);
        the result equals islice(train_batches(...), start_step, None).
        """

    @abstractmethod
    def eval_batches(
        self, split: str, batch_size: int, seq_len: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        """Deterministic batches of 'valid' or 'test' (all of it when max_batches is None)."""


def _check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise DatasetError(f"split '{split}' is not one of {', '.join(EVAL_SPLITS)}")


@dataclass
class LanguageModelTask(Task):
    """Character (byte) language modelling over train/valid/test id arrays.

    Batching is contiguous streams for truncated BPTT: a split is cut into batch_size
    equal streams and batch k holds chunk k of every stream.
    """

    kind = "lm"
    metric = "bpc"
    metric_mode = "min"
    splits: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # uint8 ids per split
    vocabulary: bytes = b""  # vocabulary[id] is the byte value of that id

    @classmethod
    def from_bytes(cls, name: str, raw_splits: dict[str, np.ndarray]) -> "LanguageModelTask":
        """Build the dense vocabulary of every byte value present in any split and encode the splits."""
        present = np.zeros(256, dtype=bool)
        for raw in raw_splits.values():
            present |= np.bincount(raw, minlength=256) > 0
        byte_values = np.flatnonzero(present)
        id_of_byte = np.zeros(256, dtype=np.uint8)
        id_of_byte[byte_values] = np.arange(len(byte_values), dtype=np.uint8)
        return cls(
            name=name,
            n_input=len(byte_values),
            n_output=len(byte_values),
            splits={split: id_of_byte[raw] for split, raw in raw_splits.items()},
            vocabulary=bytes(byte_values.tolist()),
        )

    def _streams(self, split: str, batch_size: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) views of inputs and next-id targets; no copy."""
        ids = self.splits[split]
        stream_len = (len(ids) - 1 - offset) // batch_size
        if stream_len < 1:
            raise DatasetError(f"split '{split}' of task '{self.name}' has {len(ids)} ids, "
                               f"too few for {batch_size} streams")
        span = batch_size * stream_len
        inputs = ids[offset : offset + span].reshape(batch_size, stream_len)
        targets = ids[offset + 1 : offset + 1 + span].reshape(batch_size, stream_len)
        return inputs, targets

    def train_batches(self, batch_size: int, seq_len: int, seed: int, start_step: int = 0) -> Iterator[Batch]:
        """Endless epochs over the train split; each epoch shifts the chunk grid by a seeded offset < seq_len."""
        rng = np.random.default_rng(seed)
        epoch, skip = 0, start_step
        while True:
            offset = int(rng.integers(0, seq_len))
            inputs, targets = self._streams("train", batch_size, offset)
            n_chunks = inputs.shape[1] // seq_len
            if n_chunks == 0:
                raise DatasetError(
                    f"split 'train' of task '{self.name}' is too short for batch_size {batch_size} x seq_len {seq_len}"
                )
            for chunk in range(n_chunks)[skip:]:
                start = chunk * seq_len
                yield _lm_batch(inputs, targets, start, start + seq_len, chunk > 0, epoch)
            skip = max(0, skip - n_chunks)
            epoch += 1

    def eval_batches(
        self, split: str, batch_size: int, seq_len: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        """Chunks of seq_len from the start of each stream; the last chunk is shorter so the whole split is covered."""
        _check_split(split)
        inputs, targets = self._streams(split, batch_size, 0)
        starts = range(0, inputs.shape[1], seq_len)[:max_batches]
        for chunk, start in enumerate(starts):
            yield _lm_batch(inputs, targets, start, min(start + seq_len, inputs.shape[1]), chunk > 0, 0)


def _lm_batch(inputs: np.ndarray, targets: np.ndarray, start: int, stop: int, continues: bool, epoch: int) -> Batch:
    return Batch(
        inputs=torch.from_numpy(inputs[:, start:stop].astype(np.int64)),
        targets=torch.from_numpy(targets[:, start:stop].astype(np.int64)),
        continues=continues,
        position=start,
        epoch=epoch,
    )


@dataclass
class SpikeClassificationTask(Task):
    """Classify spike recordings, one digit per example or several concatenated in time (SHD-Adding).

    With digits_per_example > 1 the label is the sum of (label mod 10) over the digits.
    Training examples are drawn fresh each epoch from train_pool; valid/test examples are fixed rows.
    """

    kind = "classification"
    metric = "accuracy"
    metric_mode = "max"
    train_digits: SpikeDigits | None = field(default=None, repr=False)
    train_pool: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    eval_sets: dict[str, tuple[SpikeDigits, np.ndarray]] = field(default_factory=dict, repr=False)
    digits_per_example: int = 1

    def label_of(self, digits: SpikeDigits, rows: np.ndarray) -> np.ndarray:
        """Labels of examples given as (n, digits_per_example) sample indices."""
        if self.digits_per_example == 1:
            return digits.labels[rows[:, 0]]
        return (digits.labels[rows] % 10).sum(axis=1)

    def _batch(self, digits: SpikeDigits, rows: np.ndarray, epoch: int) -> Batch:
        return Batch(
            inputs=digits.dense(rows),
            targets=torch.from_numpy(self.label_of(digits, rows).astype(np.int64)),
            epoch=epoch,
        )

    def train_batches(self, batch_size: int, seq_len: int, seed: int, start_step: int = 0) -> Iterator[Batch]:
        """Endless epochs; each epoch every training digit appears once in each position, in fresh combinations.

        seq_len is ignored: the binning fixes the number of time steps.
        """
        if len(self.train_pool) < batch_size:
            raise DatasetError(f"task '{self.name}' has {len(self.train_pool)} training samples, "
                               f"fewer than batch_size {batch_size}")
        rng = np.random.default_rng(seed)
        epoch, skip = 0, start_step
        while True:
            rows = np.stack([rng.permutation(self.train_pool) for _ in range(self.digits_per_example)], axis=1)
            starts = range(0, len(rows) - batch_size + 1, batch_size)
            for start in starts[skip:]:
                yield self._batch(self.train_digits, rows[start : start + batch_size], epoch)
            skip = max(0, skip - len(starts))
            epoch += 1

    def eval_batches(
        self, split: str, batch_size: int, seq_len: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        """The split's fixed examples in order; the last batch may be smaller so every example counts once."""
        _check_split(split)
        digits, rows = self.eval_sets[split]
        for start in range(0, len(rows), batch_size)[:max_batches]:
            yield self._batch(digits, rows[start : start + batch_size], 0)
