"""Datasets as tasks: `load_task(name, options, seed)` returns a Task that yields training and evaluation batches.

`task_shape(name, options)` tells a task's input and output sizes; for Enwik8 and SHD without their data.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from elm_core.data.errors import DatasetCorrupt, DatasetError, DatasetUnavailable
from elm_core.data.files import data_dir
from elm_core.data.shd import SHD_CHANNELS, SHD_CLASSES, SHD_URL, read_shd, shd_file
from elm_core.data.spikes import SpikeDigits, synthetic_digits
from elm_core.data.tasks import Batch, LanguageModelTask, SpikeClassificationTask, Task
from elm_core.data.text import (
    ENWIK8_BYTES,
    ENWIK8_MD5,
    ENWIK8_VOCABULARY,
    enwik8_splits,
    pystdlib_splits,
    synthetic_copy_splits,
    textfile_splits,
)

__all__ = [
    "Batch",
    "DatasetCorrupt",
    "DatasetError",
    "DatasetUnavailable",
    "LanguageModelTask",
    "SpikeClassificationTask",
    "Task",
    "TASK_NAMES",
    "load_task",
    "task_shape",
    "task_type",
]

ADDING_CLASSES = 19  # (y1 mod 10) + (y2 mod 10) takes the values 0..18
_DOWNLOAD_OPTIONS = {"data_dir", "download", "url"}
_SHD_OPTIONS = _DOWNLOAD_OPTIONS | {"bin_ms", "duration_s", "valid_fraction"}
_SYNTHETIC_SPIKE_OPTIONS = {"n_channels", "steps_per_digit", "n_train", "n_test", "valid_fraction", "corpus_seed"}


def _shape_from_data(name: str, options: dict) -> None:
    return None  # only loading the data tells the shape


class _Loader(NamedTuple):
    task_type: type[Task]  # the class `load` returns: the task's kind and metric, known without its data
    load: Callable[[str, dict, int], Task]
    options: set[str]
    known_shape: Callable[[str, dict], tuple[int, int] | None] = _shape_from_data  # (n_input, n_output) or None


def _lm(
    splits_of: Callable[[dict, int], dict[str, np.ndarray]],
    options: set[str],
    known_shape: Callable[[str, dict], tuple[int, int] | None] = _shape_from_data,
) -> _Loader:
    def load(name: str, task_options: dict, seed: int) -> Task:
        return LanguageModelTask.from_bytes(name, splits_of(task_options, seed))

    return _Loader(LanguageModelTask, load, options, known_shape)


def _enwik8_shape(name: str, options: dict) -> tuple[int, int] | None:
    standard_file = (int(options.get("expected_size", ENWIK8_BYTES)) == ENWIK8_BYTES
                     and options.get("expected_md5", ENWIK8_MD5) == ENWIK8_MD5)
    if not standard_file:
        return None  # another file in enwik8's format has its own vocabulary
    return ENWIK8_VOCABULARY, ENWIK8_VOCABULARY


def _shd(digits_per_example: int) -> _Loader:
    n_classes = SHD_CLASSES if digits_per_example == 1 else ADDING_CLASSES

    def load(name: str, options: dict, seed: int) -> Task:
        bin_s, duration_s = _shd_binning(name, options)
        train, test = (
            read_shd(shd_file(data_dir(options), split, options.get("url", SHD_URL), options.get("download", True)),
                     bin_s, duration_s)
            for split in ("train", "test")
        )
        return _spike_task(name, train, test, digits_per_example, n_classes, seed, options)

    def known_shape(name: str, options: dict) -> tuple[int, int]:
        _shd_binning(name, options)
        return SHD_CHANNELS, n_classes

    return _Loader(SpikeClassificationTask, load, _SHD_OPTIONS, known_shape)


def _shd_binning(name: str, options: dict) -> tuple[float, float]:
    """(bin_s, duration_s) from the options; DatasetError unless 0 < bin_s <= duration_s."""
    bin_s = float(options.get("bin_ms", 2.0)) / 1000.0
    duration_s = float(options.get("duration_s", 1.0))
    if bin_s <= 0 or duration_s < bin_s:
        raise DatasetError(f"task '{name}': need 0 < bin_ms/1000 <= duration_s, got bin_ms={bin_s * 1000}, "
                           f"duration_s={duration_s}")
    return bin_s, duration_s


def _synthetic_adding(name: str, options: dict, seed: int) -> Task:
    n_channels = int(options.get("n_channels", 20))
    if n_channels < 10:
        raise DatasetError(f"task '{name}': n_channels must be at least 10 (one group per digit), got {n_channels}")
    steps = int(options.get("steps_per_digit", 25))
    rng = np.random.default_rng(int(options.get("corpus_seed", 0)))
    train = synthetic_digits(int(options.get("n_train", 2000)), n_channels, steps, rng)
    test = synthetic_digits(int(options.get("n_test", 400)), n_channels, steps, rng)
    return _spike_task(name, train, test, 2, ADDING_CLASSES, seed, options)


def _spike_task(
    name: str, train: SpikeDigits, test: SpikeDigits, digits_per_example: int, n_classes: int, seed: int, options: dict
) -> SpikeClassificationTask:
    """Seeded validation split of the training file; valid/test examples fixed by the seed."""
    valid_fraction = float(options.get("valid_fraction", 0.2))
    if not 0 < valid_fraction < 1:
        raise DatasetError(f"task '{name}': valid_fraction must lie in (0, 1), got {valid_fraction}")
    order = np.random.default_rng([seed, 0]).permutation(len(train))
    n_valid = round(valid_fraction * len(train))
    valid, pool = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    return SpikeClassificationTask(
        name=name,
        n_input=train.n_channels,
        n_output=n_classes,
        train_digits=train,
        train_pool=pool,
        eval_sets={
            "valid": (train, _fixed_examples(valid, digits_per_example, np.random.default_rng([seed, 1]))),
            "test": (test, _fixed_examples(np.arange(len(test)), digits_per_example, np.random.default_rng([seed, 2]))),
        },
        digits_per_example=digits_per_example,
    )


def _fixed_examples(samples: np.ndarray, digits_per_example: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) rows: every sample once as first digit, partners drawn by a seeded permutation."""
    return np.stack([samples, *(rng.permutation(samples) for _ in range(digits_per_example - 1))], axis=1)


_LOADERS: dict[str, _Loader] = {
    "enwik8": _lm(lambda options, seed: enwik8_splits(options), _DOWNLOAD_OPTIONS | {"expected_size", "expected_md5"},
                  _enwik8_shape),
    "textfile": _lm(textfile_splits, {"path"}),
    "pystdlib": _lm(pystdlib_splits, {"max_bytes"}),
    "synthetic_copy": _lm(synthetic_copy_splits, {"corpus_seed", "corpus_bytes"}),
    "shd": _shd(1),
    "shd_adding": _shd(2),
    "synthetic_adding": _Loader(SpikeClassificationTask, _synthetic_adding, _SYNTHETIC_SPIKE_OPTIONS),
}
TASK_NAMES = tuple(_LOADERS)


def task_type(name: str) -> type[Task]:
    """The class of task `name` (its kind, metric and metric_mode) without reading any data; DatasetError if unknown."""
    return _loader(name).task_type


def load_task(name: str, options: dict | None = None, seed: int = 0) -> Task:
    """Load a task by name; seed fixes the text/validation split and the fixed valid/test examples.

    Raises DatasetError (one-line message) for an unknown task or option, missing or damaged data.
    """
    loader, options = _checked(name, options)
    return loader.load(name, options, seed)


def task_shape(name: str, options: dict | None = None) -> tuple[int, int]:
    """(n_input, n_output) of a task; the standard datasets' are known, so their data is not read (nor fetched).

    Raises DatasetError as load_task does; a task whose shape only its data tells is loaded.
    """
    loader, options = _checked(name, options)
    if (shape := loader.known_shape(name, options)) is not None:
        return shape
    task = loader.load(name, options, 0)
    return task.n_input, task.n_output


def _checked(name: str, options: dict | None) -> tuple[_Loader, dict]:
    loader = _loader(name)
    options = options or {}
    unknown = sorted(set(options) - loader.options)
    if unknown:
        raise DatasetError(f"task '{name}' has no option {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(sorted(loader.options))})")
    return loader, options


def _loader(name: str) -> _Loader:
    if name not in _LOADERS:
        raise DatasetError(f"unknown task '{name}' (known: {', '.join(TASK_NAMES)})")
    return _LOADERS[name]
