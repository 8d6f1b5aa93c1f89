"""Tokens/s the data loaders deliver, against the training rates they must exceed 100-fold.

The training rates are measured in the same run: the trainer's own step (forward, backward, Adam) at the
fastest reference config of each task (benchmarks/anchors.py: the Enwik8-style N = 256 for the LM, the
SHD-Adding reference), on batches of the loader being timed.

    python benchmarks/data_throughput.py [--shd-train 8156] [--spikes-per-digit 8000]

A token is one time step of one batch row (B * T per batch). SHD-Adding runs on a generated
file of SHD's size and layout (8156 training / 2264 test digits, 700 channels), so no download is needed.
"""

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
from anchors import REFERENCE_CONFIGS
from rich.console import Console
from rich.table import Table

from elm_core.data import load_task
from elm_core.data.shd import SHD_CHANNELS
from elm_core.train import TrainConfig, Trainer

REQUIRED_RATIO = 100.0


def tokens_per_second(task, batch_size: int, seq_len: int, n_batches: int, rounds: int = 5) -> tuple[float, float]:
    """(per wall-clock second, per second of this process's CPU time): medians over rounds after a warm-up round.

    The CPU-time rate is the loader's own cost; on a machine shared with other jobs the wall-clock
    rate also counts the time the loader waited for a core.
    """
    batches = task.train_batches(batch_size, seq_len, seed=0)
    wall_rates, cpu_rates = [], []
    for _ in range(rounds + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        tokens = sum(batch.inputs.shape[0] * batch.inputs.shape[1] for batch in islice(batches, n_batches))
        wall_rates.append(tokens / (time.perf_counter() - wall))
        cpu_rates.append(tokens / (time.process_time() - cpu))
    return float(np.median(wall_rates[1:])), float(np.median(cpu_rates[1:]))


def training_tokens_per_second(task: str, options: dict, config: str, steps: int = 3) -> float:
    """Median tokens/s of the trainer's step at a reference config, after one warm-up step."""
    model_cfg, batch_size, seq_len = REFERENCE_CONFIGS[config]
    model = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k not in ("n_input", "n_output")}
    trainer = Trainer(TrainConfig(task=task, task_options=options, model=model, batch_size=batch_size,
                                  seq_len=seq_len, device="cpu"))
    batches = trainer.task.train_batches(batch_size, seq_len, seed=0)
    rates = [trainer.train_step(next(batches))["tokens_per_s"] for _ in range(steps + 1)]
    return statistics.median(rates[1:])


def write_shd_sized_file(path: Path, n_digits: int, spikes_per_digit: int, rng: np.random.Generator) -> None:
    """SHD layout (vlen float32 seconds, vlen uint16 channels, uint16 labels); digits of Poisson-many spikes
    at uniform times in [0, 1.2) s, so some fall outside the 1 s window as in SHD."""
    counts = rng.poisson(spikes_per_digit, n_digits)
    with h5py.File(path, "w") as handle:
        times = handle.create_dataset("spikes/times", (n_digits,), dtype=h5py.vlen_dtype(np.float32))
        units = handle.create_dataset("spikes/units", (n_digits,), dtype=h5py.vlen_dtype(np.uint16))
        for digit, count in enumerate(counts):
            times[digit] = np.sort(rng.uniform(0.0, 1.2, count)).astype(np.float32)
            units[digit] = rng.integers(0, SHD_CHANNELS, count).astype(np.uint16)
        handle.create_dataset("labels", data=rng.integers(0, 20, n_digits).astype(np.uint16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shd-train", type=int, default=8156, help="training digits in the generated file")
    parser.add_argument("--shd-test", type=int, default=2264, help="test digits in the generated file")
    parser.add_argument("--spikes-per-digit", type=int, default=8000, help="mean spikes per digit")
    parser.add_argument("--batches", type=int, default=200, help="SHD-Adding batches per timed round")
    args = parser.parse_args()
    console = Console(width=120)
    rates, training = {}, {}

    start = time.perf_counter()
    task = load_task("pystdlib", {}, seed=0)
    console.print(f"pystdlib: loaded {sum(len(ids) for ids in task.splits.values()):,} bytes in "
                  f"{time.perf_counter() - start:.2f} s")
    rates["pystdlib LM"] = tokens_per_second(task, batch_size=8, seq_len=100, n_batches=20_000)
    training["pystdlib LM"] = training_tokens_per_second("pystdlib", {}, "small")

    with tempfile.TemporaryDirectory() as directory:
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        write_shd_sized_file(Path(directory) / "shd_train.h5", args.shd_train, args.spikes_per_digit, rng)
        write_shd_sized_file(Path(directory) / "shd_test.h5", args.shd_test, args.spikes_per_digit, rng)
        console.print(f"SHD-sized files written in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        task = load_task("shd_adding", {"data_dir": directory, "download": False}, seed=0)
        console.print(f"shd_adding: read and binned both files in {time.perf_counter() - start:.2f} s")
        rates["SHD-Adding"] = tokens_per_second(task, batch_size=8, seq_len=1000, n_batches=args.batches)
        training["SHD-Adding"] = training_tokens_per_second(
            "shd_adding", {"data_dir": directory, "download": False}, "shd")

    table = Table(title=f"data loader throughput (B = 8), load average {os.getloadavg()[0]:.1f} on "
                        f"{os.cpu_count()} cores")
    columns = ("task", "training tokens/s", "loader tokens/s (wall)", "ratio", "loader tokens/s (CPU time)", "ratio")
    for column in columns:
        table.add_column(column, justify="right")
    for name, (wall_rate, cpu_rate) in rates.items():
        table.add_row(name, f"{training[name]:,.0f}", f"{wall_rate:,.0f}", _ratio(wall_rate / training[name]),
                      f"{cpu_rate:,.0f}", _ratio(cpu_rate / training[name]))
    console.print(table)
    console.print(f"ratio = loader / training tokens/s (the trainer's step, measured above); "
                  f"required >= {REQUIRED_RATIO:.0f}x")


def _ratio(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= REQUIRED_RATIO else f"[red]{ratio:,.0f}x (< {REQUIRED_RATIO:.0f}x)[/red]"


if __name__ == "__main__":
    main()
