"""The outbox in front of the database: what a driver killed mid-write leaves behind must not strand the sweep."""

from __future__ import annotations

import json
import socket
import time

import pytest
from sqlalchemy.engine import make_url
from store_helpers import create_sweep
from tcp_proxy import TcpProxy

from orchestrator.sink import Outbox, OutboxUnwritable, ResultSink, result_record, status_record
from resultsdb import ResultsStore, TrialStatus, migrate


def results(trial_id: str, steps: range) -> list[dict]:
    return [result_record(trial_id, step, {"bpc": 3.0 - 0.01 * step}) for step in steps]


def delivered_steps(store: ResultsStore, trial_id: str) -> list[int]:
    return [point.step for point in store.series(trial_id, "bpc")]


def test_a_torn_last_line_is_set_aside_and_the_next_driver_delivers_everything(store, tmp_path):
    [trial] = create_sweep(store, trials=1)
    killed = Outbox(tmp_path / "outbox", "pareto")
    killed.append(results(trial, range(0, 5)))
    torn = json.dumps(results(trial, range(5, 6))[0]).encode()[:20]
    with open(killed.path, "ab") as f:  # the kill cut the last write short: no newline
        f.write(torn)

    sink = ResultSink(store, Outbox(tmp_path / "outbox", "pareto")).start()  # what `resume` opens
    for record in results(trial, range(5, 10)):
        sink.put(record)
    assert sink.close(timeout=10), sink.last_error

    assert delivered_steps(store, trial) == list(range(10))
    assert (tmp_path / "outbox" / "pareto.torn").read_bytes() == torn + b"\n"
    assert Outbox(tmp_path / "outbox", "pareto").pending()[0] == []


def test_a_line_damaged_inside_the_file_is_skipped_and_kept_once(tmp_path):
    outbox = Outbox(tmp_path, "s")
    outbox.append(results("t", range(0, 2)))
    with open(outbox.path, "ab") as f:
        f.write(b'{"kind": "res\x00\x00\n')
    outbox.append(results("t", range(2, 4)))

    for _ in range(2):  # a failed delivery reads the same records again
        records, end = outbox.pending()
        assert [record["step"] for record in records] == [0, 1, 2, 3]
    assert end == outbox.path.stat().st_size
    assert outbox.torn_path.read_bytes() == b'{"kind": "res\x00\x00\n'


def test_whole_lines_are_left_alone(tmp_path):
    outbox = Outbox(tmp_path, "s")
    outbox.append(results("t", range(3)))
    size = outbox.path.stat().st_size
    reopened = Outbox(tmp_path, "s")
    assert reopened.path.stat().st_size == size and not reopened.torn_path.exists()
    assert [record["step"] for record in reopened.pending()[0]] == [0, 1, 2]


def test_a_sink_that_cannot_write_its_outbox_says_so_instead_of_dropping_results(store, tmp_path):
    [trial] = create_sweep(store, trials=1)
    sink = ResultSink(store, Outbox(tmp_path / "outbox", "pareto")).start()
    sink.put(results(trial, range(0, 1))[0])
    deadline = time.monotonic() + 30
    while not delivered_steps(store, trial) and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.outbox.path.unlink()
    sink.outbox.path.mkdir()  # appending now fails, as on a full disk or a removed volume
    sink.put(results(trial, range(1, 2))[0])
    while sink.failure is None and time.monotonic() < deadline:
        time.sleep(0.05)

    assert isinstance(sink.failure, OutboxUnwritable) and str(sink.outbox.path) in str(sink.failure)
    with pytest.raises(OutboxUnwritable, match="orchestrator resume"):
        sink.close(timeout=1)
    assert delivered_steps(store, trial) == [0]


@pytest.mark.parametrize("tail_bytes", [0, 20, 65_535, 65_536, 200_000])
def test_a_torn_tail_of_any_length_is_cut_at_the_last_newline(tmp_path, tail_bytes):
    """The tail is found by reading back in 64 KiB windows: a line ending at a window's first byte, a tail longer
    than a window, a file that is only a torn line."""
    outbox = Outbox(tmp_path / "state" / "outbox", "s")  # parents are created
    outbox.append(results("t", range(2)))
    whole = outbox.path.read_bytes()
    torn = b"x" * tail_bytes
    with open(outbox.path, "ab") as f:
        f.write(torn)

    reopened = Outbox(tmp_path / "state" / "outbox", "s")
    assert reopened.path.read_bytes() == whole
    assert [record["step"] for record in reopened.pending()[0]] == [0, 1]
    if tail_bytes:
        assert reopened.torn_path.read_bytes() == torn + b"\n"
    else:
        assert not reopened.torn_path.exists()


@pytest.mark.parametrize("torn", [b"{", b'{"kind": "resu'])
def test_a_file_that_is_only_a_torn_line_is_emptied(tmp_path, torn):
    outbox = Outbox(tmp_path, "s")
    outbox.path.write_bytes(torn)
    reopened = Outbox(tmp_path, "s")
    assert reopened.path.read_bytes() == b"" and reopened.torn_path.read_bytes() == torn + b"\n"


def test_pending_leaves_a_line_still_being_written(tmp_path):
    outbox = Outbox(tmp_path, "s")
    outbox.append(results("t", range(3)))
    whole = outbox.path.stat().st_size
    with open(outbox.path, "ab") as f:  # another append in progress: its newline not written yet
        f.write(b'{"ki')
    records, end = outbox.pending()
    assert [record["step"] for record in records] == [0, 1, 2] and end == whole


def test_settle_returns_once_everything_put_is_in_the_database(store, tmp_path):
    [trial] = create_sweep(store, trials=1)
    sink = ResultSink(store, Outbox(tmp_path / "outbox", "pareto")).start()
    for _ in range(3):  # each round's records are all readable when settle returns
        start = len(delivered_steps(store, trial))
        for record in results(trial, range(start, start + 40)):
            sink.put(record)
        assert sink.settle(timeout=30)
        assert delivered_steps(store, trial) == list(range(start + 40))
    assert sink.close(timeout=10)


def test_settle_gives_up_after_its_timeout_while_the_database_is_down(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = ResultsStore(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?connect_timeout=1")
    sink = ResultSink(down, Outbox(tmp_path / "outbox", "pareto")).start()
    sink.put(results("t", range(1))[0])
    started = time.monotonic()
    assert not sink.settle(timeout=1.0)
    assert time.monotonic() - started < 10
    assert not sink.close(timeout=0.5)
    assert [record["step"] for record in Outbox(tmp_path / "outbox", "pareto").pending()[0]] == [0]


def test_settle_returns_false_at_once_when_the_outbox_cannot_be_written(store, tmp_path):
    [trial] = create_sweep(store, trials=1)
    sink = ResultSink(store, Outbox(tmp_path / "outbox", "pareto")).start()
    sink.outbox.path.unlink(missing_ok=True)
    sink.outbox.path.mkdir()  # appending fails, as on a full disk
    sink.put(results(trial, range(1))[0])
    started = time.monotonic()
    assert not sink.settle(timeout=60)
    assert time.monotonic() - started < 30 and isinstance(sink.failure, OutboxUnwritable)


def test_records_are_applied_in_order_with_every_status_detail(store, tmp_path):
    [trial] = create_sweep(store, trials=1)
    sink = ResultSink(store, Outbox(tmp_path / "outbox", "pareto")).start()
    sink.put(status_record(trial, TrialStatus.RUNNING, node="host:abc", device="cpu", error=None))
    for record in results(trial, range(0, 3)):
        sink.put(record)
    sink.put(status_record(trial, TrialStatus.COMPLETED, final={"bpc": 1.25}))
    sink.put(results(trial, range(3, 4))[0])  # a late result after the status change still lands
    assert sink.settle(timeout=30)
    info = store.find_trial(trial)
    assert (info.status, info.node, info.device, info.error, info.attempts) == ("completed", "host:abc", "cpu", None, 1)
    assert info.metrics["bpc"].final == 1.25
    assert delivered_steps(store, trial) == [0, 1, 2, 3]
    assert sink.close(timeout=10)
    assert Outbox(tmp_path / "outbox", "pareto").pending()[0] == []  # all marked delivered


def test_result_records_keep_numbers_only_as_floats():
    record = result_record("t", 7.0, {"loss": 2, "acc": 0.5, "node": "h", "flag": True, "none": None})
    assert record["step"] == 7 and isinstance(record["step"], int)
    assert record["metrics"] == {"loss": 2.0, "acc": 0.5} and isinstance(record["metrics"]["loss"], float)
    assert status_record("t", TrialStatus.FAILED, error="boom", node=None) == {
        "kind": "status", "trial_id": "t", "status": TrialStatus.FAILED, "time": pytest.approx(time.time(), abs=5),
        "error": "boom"}


def test_a_sink_delivers_what_waited_once_the_database_is_back(tmp_path, postgres_url):
    migrate.upgrade(postgres_url)
    with ResultsStore(postgres_url) as direct:
        [trial] = create_sweep(direct, trials=1)
    url = make_url(postgres_url)
    proxy = TcpProxy((url.host, url.port or 5432)).start()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    sink = ResultSink(ResultsStore(through), Outbox(tmp_path / "outbox", "pareto")).start()
    try:
        for record in results(trial, range(0, 5)):
            sink.put(record)
        assert sink.settle(timeout=30)
        proxy.stop()  # the database goes away
        for record in results(trial, range(5, 10)):
            sink.put(record)
        assert not sink.settle(timeout=2)
        assert sink.last_error is not None
        assert [r["step"] for r in Outbox(tmp_path / "outbox", "pareto").pending()[0]] == list(range(5, 10))
        proxy.start()  # back: the thread's retries deliver without a restart
        assert sink.settle(timeout=30)
        assert sink.last_error is None
        with ResultsStore(postgres_url) as direct:
            assert delivered_steps(direct, trial) == list(range(10))
    finally:
        sink.close(timeout=5)
        proxy.stop()


def test_every_torn_line_is_kept_after_the_earlier_ones_byte_for_byte(tmp_path):
    outbox = Outbox(tmp_path, "s")
    outbox.append(results("t", range(1)))
    with open(outbox.path, "ab") as f:
        f.write(b"not json \t \n")  # bytes lost inside the file: a whole line that is no record
    assert [record["step"] for record in outbox.pending()[0]] == [0]
    with open(outbox.path, "ab") as f:
        f.write(b'{"kind": ')  # then a torn tail, cut when the outbox is next opened
    Outbox(tmp_path, "s")

    assert outbox.torn_path.read_bytes() == b'not json \t \n{"kind": \n'
