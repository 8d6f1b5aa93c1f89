"""Dataset loaders, run on small files written in the real published formats."""

import gzip
import hashlib
import http.server
import socket
import threading
import zipfile
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elm_core.data import DatasetCorrupt, DatasetError, DatasetUnavailable, load_task, task_type

ENWIK8_LIKE_BYTES = 20_000
SHD_TRAIN_DIGITS = 60
SHD_TEST_DIGITS = 20


# ---------- helpers that write the real formats ----------


def enwik8_like_bytes() -> bytes:
    rng = np.random.default_rng(7)
    words = [b"<page>", b"the ", b"[[link]] ", b"caf\xc3\xa9 ", b"\n", b"1999 "]
    return b"".join(words[i] for i in rng.integers(0, len(words), ENWIK8_LIKE_BYTES))[:ENWIK8_LIKE_BYTES]


def write_enwik8_zip(directory: Path, data: bytes, member: str = "enwik8", method: int = zipfile.ZIP_DEFLATED) -> Path:
    path = directory / "enwik8.zip"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr(member, data)
    return path


def enwik8_options(directory: Path, **extra) -> dict:
    return {"data_dir": str(directory), "expected_size": ENWIK8_LIKE_BYTES, "download": False, **extra}


def write_shd_h5(path: Path, times: list, units: list, labels: list, times_dtype=np.float32, skip: str = "") -> None:
    """The published layout: vlen float seconds in spikes/times, vlen uint16 in spikes/units, uint16 labels."""
    with h5py.File(path, "w") as handle:
        if skip != "spikes/times":
            column = handle.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(times_dtype))
            for index, row in enumerate(times):
                column[index] = np.asarray(row, dtype=times_dtype)
        if skip != "spikes/units":
            column = handle.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
            for index, row in enumerate(units):
                column[index] = np.asarray(row, dtype=np.uint16)
        if skip != "labels":
            handle.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        handle.create_dataset("extra/speaker", data=np.zeros(len(labels), dtype=np.uint16))


def identifiable_digits(n_digits: int, first_channel: int, seed: int) -> tuple[list, list, list]:
    """Digit i fires channel first_channel + i in its first 2 ms bin (its identity) plus random spikes on
    channels >= 600."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for index in range(n_digits):
        count = int(rng.integers(5, 40))
        times.append(np.concatenate([[0.0005], np.sort(rng.uniform(0.002, 1.3, count))]))
        units.append(np.concatenate([[first_channel + index], rng.integers(600, 700, count)]))
    return times, units, list(rng.integers(0, 20, n_digits))


def write_shd_pair(directory: Path, gzipped: bool = False) -> dict[str, list]:
    """shd_train.h5 (digits identified by channels 0..59) and shd_test.h5 (channels 100..119); returns the labels."""
    labels = {}
    for split, n_digits, first_channel in (("train", SHD_TRAIN_DIGITS, 0), ("test", SHD_TEST_DIGITS, 100)):
        times, units, labels[split] = identifiable_digits(n_digits, first_channel, seed=first_channel)
        path = directory / f"shd_{split}.h5"
        write_shd_h5(path, times, units, labels[split])
        if gzipped:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return labels


def digit_at(spikes: np.ndarray, step: int, first_channel: int, n_digits: int) -> int:
    """Which identifiable digit starts at time step `step` of one example (B=1 slice of (T, C))."""
    (channel,) = np.flatnonzero(spikes[step, first_channel : first_channel + n_digits])
    return int(channel)


def closed_port_url(path: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


@pytest.fixture
def file_server(tmp_path: Path):
    """A local HTTP server publishing the files of tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=5)


def decoded(task, ids: np.ndarray) -> bytes:
    return bytes(np.frombuffer(task.vocabulary, dtype=np.uint8)[ids])


# ---------- enwik8 ----------


def test_enwik8_zip_gives_standard_split_and_dense_vocabulary(tmp_path):
    data = enwik8_like_bytes()
    write_enwik8_zip(tmp_path, data)
    task = load_task("enwik8", enwik8_options(tmp_path), seed=0)
    assert (task.kind, task.metric, task.metric_mode) == ("lm", "bpc", "min")
    assert type(task) is task_type("enwik8")
    assert task.vocabulary == bytes(sorted(set(data)))
    assert task.n_input == task.n_output == len(set(data))
    assert decoded(task, task.splits["train"]) == data[:18_000]
    assert decoded(task, task.splits["valid"]) == data[18_000:19_000]
    assert decoded(task, task.splits["test"]) == data[19_000:]


def test_enwik8_raw_file_and_zip_load_identically(tmp_path):
    data = enwik8_like_bytes()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "enwik8").write_bytes(data)
    write_enwik8_zip(tmp_path, data)
    from_raw = load_task("enwik8", enwik8_options(tmp_path / "raw"), seed=0)
    from_zip = load_task("enwik8", enwik8_options(tmp_path), seed=0)
    for split in ("train", "valid", "test"):
        assert np.array_equal(from_raw.splits[split], from_zip.splits[split])


def test_enwik8_truncated_raw_file_is_reported_with_sizes(tmp_path):
    (tmp_path / "enwik8").write_bytes(enwik8_like_bytes()[:-1])
    with pytest.raises(DatasetCorrupt, match="has 19,999 bytes, expected 20,000"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_checksum_mismatch_is_reported(tmp_path):
    write_enwik8_zip(tmp_path, enwik8_like_bytes())
    with pytest.raises(DatasetCorrupt, match="md5 .* expected 0123"):
        load_task("enwik8", enwik8_options(tmp_path, expected_md5="0123" * 8), seed=0)


def test_enwik8_truncated_zip_is_reported(tmp_path):
    path = write_enwik8_zip(tmp_path, enwik8_like_bytes())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetCorrupt, match="enwik8.zip is a damaged zip file"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_corrupted_zip_member_fails_its_crc(tmp_path):
    path = write_enwik8_zip(tmp_path, enwik8_like_bytes(), method=zipfile.ZIP_STORED)
    content = bytearray(path.read_bytes())
    content[1000] ^= 0xFF  # inside the stored member's bytes
    path.write_bytes(bytes(content))
    with pytest.raises(DatasetCorrupt, match="damaged zip file .*CRC"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_zip_without_enwik8_member_names_its_members(tmp_path):
    write_enwik8_zip(tmp_path, enwik8_like_bytes(), member="enwik8.txt")
    with pytest.raises(DatasetCorrupt, match="no member 'enwik8' \\(members: enwik8.txt\\)"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_zip_member_of_wrong_size_is_reported(tmp_path):
    write_enwik8_zip(tmp_path, enwik8_like_bytes()[:15_000])
    with pytest.raises(DatasetCorrupt, match="member 'enwik8' has 15,000 bytes, expected 20,000"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_missing_offline_says_where_to_put_the_file(tmp_path):
    options = enwik8_options(tmp_path, download=True, url=closed_port_url("enwik8.zip"))
    with pytest.raises(DatasetUnavailable) as raised:
        load_task("enwik8", options, seed=0)
    message = str(raised.value)
    assert "\n" not in message
    assert "download of http://127.0.0.1" in message and f"in {tmp_path}" in message and "enwik8.zip" in message
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_enwik8_missing_with_download_disabled_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DatasetUnavailable, match=f"enwik8 not found in {tmp_path}; put enwik8.zip"):
        load_task("enwik8", enwik8_options(tmp_path), seed=0)


def test_enwik8_downloads_when_missing_and_then_reads_the_download(tmp_path, file_server):
    served, base_url = file_server
    data = enwik8_like_bytes()
    write_enwik8_zip(served, data)
    target = tmp_path / "data"
    task = load_task("enwik8", enwik8_options(target, download=True, url=base_url + "enwik8.zip"), seed=0)
    assert (target / "enwik8.zip").read_bytes() == (served / "enwik8.zip").read_bytes()
    assert decoded(task, task.splits["test"]) == data[19_000:]


# ---------- LM batching ----------


def test_lm_train_batches_continue_each_stream_across_batches(tmp_path):
    task = load_task("synthetic_copy", {}, seed=0)
    ids = task.splits["train"]
    batch_size, seq_len = 4, 50
    batches = list(islice(task.train_batches(batch_size, seq_len, seed=3), 3))
    assert [batch.continues for batch in batches] == [False, True, True]
    for previous, batch in zip(batches, batches[1:]):
        assert batch.position == previous.position + seq_len
        assert np.array_equal(batch.inputs[:, 0], previous.targets[:, -1])
    rows = np.concatenate([batch.inputs.numpy() for batch in batches], axis=1)  # (B, 3T)
    targets = np.concatenate([batch.targets.numpy() for batch in batches], axis=1)
    for row, target in zip(rows, targets):
        start = ids.tobytes().find(row.astype(np.uint8).tobytes())
        assert start >= 0 and np.array_equal(target, ids[start + 1 : start + 1 + len(row)])
    assert batches[0].inputs.dtype == batches[0].targets.dtype == torch.int64


def test_lm_new_epoch_restarts_streams_and_is_flagged():
    task = load_task("synthetic_copy", {"corpus_bytes": 20_000}, seed=0)
    n_ids, batch_size, seq_len = len(task.splits["train"]), 4, 100
    fewest, most = (n_ids - seq_len) // batch_size // seq_len, (n_ids - 1) // batch_size // seq_len
    batches = list(islice(task.train_batches(batch_size, seq_len, seed=0), 3 * most + 3))
    epoch_starts = [index for index, batch in enumerate(batches) if not batch.continues]
    assert len(epoch_starts) >= 3 and epoch_starts[0] == 0
    assert all(fewest <= later - earlier <= most for earlier, later in zip(epoch_starts, epoch_starts[1:]))
    assert all(batches[index].position < seq_len for index in epoch_starts)  # each epoch shifts its grid by < T
    assert [batches[index].epoch for index in epoch_starts[:3]] == [0, 1, 2]


def test_lm_train_batches_are_reproducible_for_a_seed():
    task = load_task("synthetic_copy", {}, seed=0)
    first = [batch.inputs for batch in islice(task.train_batches(8, 64, seed=5), 3)]
    again = [batch.inputs for batch in islice(task.train_batches(8, 64, seed=5), 3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("name", ["synthetic_copy", "synthetic_adding"])
def test_train_batches_from_a_start_step_equal_the_skipped_stream(name):
    task = load_task(name, {"corpus_bytes": 20_000} if name == "synthetic_copy" else {"n_train": 100}, seed=0)
    batch_size, seq_len, start_step = 4, 100, 70  # beyond the first epoch of both tasks
    expected = list(islice(task.train_batches(batch_size, seq_len, seed=1), start_step, start_step + 5))
    resumed = list(islice(task.train_batches(batch_size, seq_len, seed=1, start_step=start_step), 5))
    assert expected[0].epoch > 0
    for want, got in zip(expected, resumed, strict=True):
        assert (want.continues, want.position, want.epoch) == (got.continues, got.position, got.epoch)
        assert torch.equal(want.inputs, got.inputs) and torch.equal(want.targets, got.targets)


def test_lm_eval_covers_the_whole_split_contiguously_per_stream():
    task = load_task("synthetic_copy", {}, seed=0)
    ids = task.splits["test"]
    batch_size, seq_len = 8, 64
    batches = list(task.eval_batches("test", batch_size, seq_len))
    stream_len = (len(ids) - 1) // batch_size
    assert batches[-1].inputs.shape[1] == stream_len - (len(batches) - 1) * seq_len  # short last chunk
    inputs = np.concatenate([batch.inputs.numpy() for batch in batches], axis=1)
    targets = np.concatenate([batch.targets.numpy() for batch in batches], axis=1)
    assert np.array_equal(inputs, ids[: batch_size * stream_len].reshape(batch_size, stream_len))
    assert np.array_equal(targets, ids[1 : 1 + batch_size * stream_len].reshape(batch_size, stream_len))
    assert [batch.continues for batch in batches] == [False] + [True] * (len(batches) - 1)
    assert len(list(task.eval_batches("valid", batch_size, seq_len, max_batches=2))) == 2


def test_eval_of_an_unknown_split_is_a_clear_error():
    task = load_task("synthetic_copy", {}, seed=0)
    with pytest.raises(DatasetError, match="split 'train' is not one of valid, test"):
        next(task.eval_batches("train", 8, 64))


# ---------- textfile, pystdlib, synthetic ----------


def test_textfile_directory_split_is_seeded_and_partitions_the_corpus(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(name.encode() * 400)
    corpus_size = sum(path.stat().st_size for path in tmp_path.rglob("*.txt"))
    first = load_task("textfile", {"path": str(tmp_path)}, seed=1)
    again = load_task("textfile", {"path": str(tmp_path)}, seed=1)
    other = load_task("textfile", {"path": str(tmp_path)}, seed=2)
    assert sum(len(ids) for ids in first.splits.values()) == corpus_size
    assert 0.04 < len(first.splits["valid"]) / corpus_size < 0.06
    assert all(np.array_equal(first.splits[s], again.splits[s]) for s in ("train", "valid", "test"))
    assert not np.array_equal(first.splits["valid"], other.splits["valid"])
    assert decoded(first, first.splits["train"]).startswith(b"a.txt")  # sorted path order


def test_textfile_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="needs option 'path'"):
        load_task("textfile", {}, seed=0)
    with pytest.raises(DatasetUnavailable, match="does not exist"):
        load_task("textfile", {"path": str(tmp_path / "nothing.txt")}, seed=0)
    (tmp_path / "tiny.txt").write_text("hello")
    with pytest.raises(DatasetError, match="has 5 bytes; at least 1000"):
        load_task("textfile", {"path": str(tmp_path / "tiny.txt")}, seed=0)


def test_pystdlib_is_size_capped_and_deterministic():
    task = load_task("pystdlib", {"max_bytes": 300_000}, seed=0)
    again = load_task("pystdlib", {"max_bytes": 300_000}, seed=0)
    assert sum(len(ids) for ids in task.splits.values()) == 300_000
    assert task.n_input > 60 and b"def " in decoded(task, task.splits["train"])
    assert task.vocabulary == again.vocabulary
    assert np.array_equal(task.splits["test"], again.splits["test"])


def test_synthetic_adding_yields_spike_batches_with_adding_labels():
    task = load_task("synthetic_adding", {}, seed=0)
    batch = next(task.train_batches(8, 0, seed=0))
    assert (task.kind, task.n_input, task.n_output, task.metric_mode) == ("classification", 20, 19, "max")
    assert type(task) is task_type("synthetic_adding")
    assert batch.inputs.shape == (8, 50, 20) and batch.inputs.dtype == torch.uint8
    assert set(np.unique(batch.inputs.numpy())) == {0, 1}
    assert batch.targets.min() >= 0 and batch.targets.max() <= 18


def test_unknown_task_or_option_is_a_one_line_error():
    with pytest.raises(DatasetError, match="unknown task 'enwik9' \\(known: enwik8, textfile"):
        load_task("enwik9", {}, seed=0)
    with pytest.raises(DatasetError, match="unknown task 'enwik9'"):
        task_type("enwik9")
    with pytest.raises(DatasetError, match="task 'pystdlib' has no option 'max_byte'"):
        load_task("pystdlib", {"max_byte": 10}, seed=0)


# ---------- SHD and SHD-Adding ----------


def shd_options(directory: Path, **extra) -> dict:
    return {"data_dir": str(directory), "download": False, **extra}


def test_shd_bins_spikes_at_2ms_over_one_second(tmp_path):
    write_shd_h5(tmp_path / "shd_train.h5", *identifiable_digits(SHD_TRAIN_DIGITS, 0, seed=0))
    times = [[0.0005, 0.0031, 0.0039, 0.9995, 1.0, 1.25]]
    units = [[3, 5, 5, 699, 7, 8]]
    write_shd_h5(tmp_path / "shd_test.h5", times, units, [13], times_dtype=np.float64)
    task = load_task("shd", shd_options(tmp_path), seed=0)
    assert (task.n_input, task.n_output, task.metric) == (700, 20, "accuracy")
    assert type(task) is task_type("shd")
    (batch,) = task.eval_batches("test", 8, 0)
    assert batch.inputs.shape == (1, 500, 700) and batch.targets.tolist() == [13]
    steps, channels = np.nonzero(batch.inputs[0].numpy())
    # two spikes share a bin; >= 1 s dropped
    assert list(zip(steps.tolist(), channels.tolist())) == [(0, 3), (1, 5), (499, 699)]
    (coarse,) = load_task("shd", shd_options(tmp_path, bin_ms=4.0), seed=0).eval_batches("test", 8, 0)
    assert coarse.inputs.shape == (1, 250, 700)


def test_shd_gzipped_files_load_like_plain_ones(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "packed").mkdir()
    write_shd_pair(tmp_path / "plain")
    write_shd_pair(tmp_path / "packed", gzipped=True)
    plain = load_task("shd", shd_options(tmp_path / "plain"), seed=0)
    packed = load_task("shd", shd_options(tmp_path / "packed"), seed=0)
    for split in ("valid", "test"):
        for a, b in zip(plain.eval_batches(split, 8, 0), packed.eval_batches(split, 8, 0), strict=True):
            assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_shd_bad_gzip_is_reported(tmp_path, damage):
    write_shd_pair(tmp_path, gzipped=True)
    packed = tmp_path / "shd_train.h5.gz"
    content = packed.read_bytes()
    packed.write_bytes(b"not gzip at all" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(DatasetCorrupt, match="shd_train.h5.gz is not a valid gzip file"):
        load_task("shd", shd_options(tmp_path), seed=0)
    assert not (tmp_path / "shd_train.h5").exists()


def test_shd_gzip_checked_against_md5sums_next_to_it(tmp_path):
    write_shd_pair(tmp_path, gzipped=True)
    (tmp_path / "md5sums.txt").write_text(f"{'f' * 32}  shd_train.h5.gz\n")
    with pytest.raises(DatasetCorrupt, match=f"shd_train.h5.gz has md5 .*, expected {'f' * 32}"):
        load_task("shd", shd_options(tmp_path), seed=0)


@pytest.mark.parametrize("missing", ["spikes/units", "labels"])
def test_shd_missing_dataset_is_named(tmp_path, missing):
    write_shd_pair(tmp_path)
    write_shd_h5(tmp_path / "shd_train.h5", *identifiable_digits(10, 0, seed=0), skip=missing)
    with pytest.raises(DatasetCorrupt, match=f"shd_train.h5 lacks dataset\\(s\\) {missing}"):
        load_task("shd", shd_options(tmp_path), seed=0)


def test_shd_rows_of_different_lengths_are_reported(tmp_path):
    write_shd_pair(tmp_path)
    times, units, labels = identifiable_digits(10, 0, seed=0)
    write_shd_h5(tmp_path / "shd_train.h5", times, units, labels[:9])
    with pytest.raises(DatasetCorrupt, match="have 10, 10, 9 rows"):
        load_task("shd", shd_options(tmp_path), seed=0)


def test_shd_truncated_hdf5_is_reported(tmp_path):
    write_shd_pair(tmp_path)
    path = tmp_path / "shd_test.h5"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetCorrupt, match="shd_test.h5 is not a readable HDF5 file"):
        load_task("shd", shd_options(tmp_path), seed=0)


def test_shd_channels_beyond_700_are_reported(tmp_path):
    write_shd_pair(tmp_path)
    write_shd_h5(tmp_path / "shd_test.h5", [[0.1]], [[700]], [0])
    with pytest.raises(DatasetCorrupt, match="spikes/units outside 0..699"):
        load_task("shd", shd_options(tmp_path), seed=0)


def test_shd_missing_offline_says_where_to_put_the_files(tmp_path):
    options = {"data_dir": str(tmp_path), "url": closed_port_url("")}
    with pytest.raises(DatasetUnavailable) as raised:
        load_task("shd", options, seed=0)
    message = str(raised.value)
    assert "\n" not in message and "put shd_train.h5.gz" in message and str(tmp_path) in message


def test_shd_download_verifies_published_md5(tmp_path, file_server):
    served, base_url = file_server
    write_shd_pair(served, gzipped=True)
    sums = {name: hashlib.md5((served / name).read_bytes()).hexdigest()
            for name in ("shd_train.h5.gz", "shd_test.h5.gz")}
    (served / "md5sums.txt").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    task = load_task("shd_adding", {"data_dir": str(tmp_path / "ok"), "url": base_url}, seed=0)
    assert task.n_output == 19 and (tmp_path / "ok" / "shd_test.h5").exists()

    (served / "md5sums.txt").write_text(f"{'0' * 32}  shd_train.h5.gz\n{sums['shd_test.h5.gz']}  shd_test.h5.gz\n")
    with pytest.raises(DatasetCorrupt, match=f"shd_train.h5.gz has md5 {sums['shd_train.h5.gz']}, expected 0{{32}}"):
        load_task("shd_adding", {"data_dir": str(tmp_path / "bad"), "url": base_url}, seed=0)
    assert not (tmp_path / "bad" / "shd_train.h5.gz").exists()


def adding_examples(batches, first_channel: int, n_digits: int):
    """(first digit, second digit, label) of every example, read back from the spikes themselves."""
    for batch in batches:
        for spikes, label in zip(batch.inputs.numpy(), batch.targets.tolist()):
            yield digit_at(spikes, 0, first_channel, n_digits), digit_at(spikes, 500, first_channel, n_digits), label


def test_shd_adding_labels_are_sum_of_digits_mod_10(tmp_path):
    labels = write_shd_pair(tmp_path)
    task = load_task("shd_adding", shd_options(tmp_path), seed=0)
    assert (task.n_input, task.n_output) == (700, 19)
    train = list(adding_examples(islice(task.train_batches(8, 0, seed=0), 12), 0, SHD_TRAIN_DIGITS))
    test = list(adding_examples(task.eval_batches("test", 8, 0), 100, SHD_TEST_DIGITS))
    assert len(test) == SHD_TEST_DIGITS
    for examples, split in ((train, "train"), (test, "test")):
        for first, second, label in examples:
            assert label == labels[split][first] % 10 + labels[split][second] % 10
    assert next(task.train_batches(8, 0, seed=0)).inputs.shape == (8, 1000, 700)


def test_shd_adding_validation_is_a_seeded_20_percent_of_training_file(tmp_path):
    write_shd_pair(tmp_path)

    def valid_examples(seed):
        task = load_task("shd_adding", shd_options(tmp_path), seed=seed)
        return list(adding_examples(task.eval_batches("valid", 8, 0), 0, SHD_TRAIN_DIGITS)), task

    valid, task = valid_examples(seed=4)
    assert valid == valid_examples(seed=4)[0]
    assert valid != valid_examples(seed=5)[0]
    valid_digits = {first for first, _, _ in valid}
    assert len(valid_digits) == len(valid) == round(0.2 * SHD_TRAIN_DIGITS)
    assert {second for _, second, _ in valid} == valid_digits
    train = adding_examples(islice(task.train_batches(8, 0, seed=0), 20), 0, SHD_TRAIN_DIGITS)
    assert not valid_digits & {digit for first, second, _ in train for digit in (first, second)}


def test_shd_adding_draws_fresh_training_pairs_each_epoch(tmp_path):
    write_shd_pair(tmp_path)
    task = load_task("shd_adding", shd_options(tmp_path), seed=0)
    n_train = SHD_TRAIN_DIGITS - round(0.2 * SHD_TRAIN_DIGITS)
    per_epoch = n_train // 8
    batches = list(islice(task.train_batches(8, 0, seed=0), 2 * per_epoch))
    assert [batch.epoch for batch in batches] == [0] * per_epoch + [1] * per_epoch
    epochs = [list(adding_examples(batches[i * per_epoch : (i + 1) * per_epoch], 0, SHD_TRAIN_DIGITS)) for i in (0, 1)]
    for examples in epochs:
        firsts = [first for first, _, _ in examples]
        assert len(set(firsts)) == len(firsts) == per_epoch * 8
    assert {(a, b) for a, b, _ in epochs[0]} != {(a, b) for a, b, _ in epochs[1]}
