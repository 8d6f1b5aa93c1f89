"""Export of a sweep's trial table (one row per trial, every summary) as CSV, Parquet or Arrow, streamed."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from api.deps import Frames, require_reader
from api.errors import ERROR_RESPONSES
from api.routers.common import SweepName
from resultsdb import METRIC_COLUMN

router = APIRouter(prefix="/sweeps", tags=["export"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)

ROWS_PER_BATCH = 5_000
MEDIA_TYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


class _Chunks(io.RawIOBase):
    """A write-only file that hands over what was written since the last `take()` (and knows its size for tell)."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._pending.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data, self._pending = b"".join(self._pending), []
        return data


Writer = Callable[[pa.NativeFile, pa.Schema], object]
WRITERS: dict[str, Writer] = {
    "csv": lambda sink, schema: pyarrow.csv.CSVWriter(sink, schema),
    "parquet": lambda sink, schema: pyarrow.parquet.ParquetWriter(sink, schema),
    "arrow": lambda sink, schema: pa.ipc.new_stream(sink, schema),
}


def stream_table(table: pa.Table, file_format: str) -> Iterator[bytes]:
    """The table in `file_format`, one piece per batch of rows as soon as it is encoded."""
    chunks = _Chunks()
    sink = pa.PythonFile(chunks, mode="w")
    writer = WRITERS[file_format](sink, table.schema)
    for batch in table.to_batches(max_chunksize=ROWS_PER_BATCH):
        writer.write_batch(batch)
        yield chunks.take()
    writer.close()
    yield chunks.take()


@router.get(
    "/{name}/export",
    response_class=StreamingResponse,
    summary="The sweep's trials, one row each with every metric summary, as a file",
    description="The table of `orchestrator export`: id, status, the allocation columns, attempts, error, node, "
    "device, start and end times, then `<metric>.<stat>` for each reported metric (numbers: float, steps integer; "
    "`.final` for the sweep's metric and metrics with a final value). Read it with `pandas.read_csv`, "
    "`pandas.read_parquet` or `pyarrow.ipc.open_stream`.",
    responses={200: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()}, "description": "The file"}},
)
def export(
    name: SweepName,
    frames: Frames,
    format: Annotated[Literal["csv", "parquet", "arrow"], Query(description="File format")] = "csv",
) -> StreamingResponse:
    # The analyses' METRIC_COLUMN repeats the sweep's metric (its final value, else its best): not exported.
    table = frames.derived(name, None, "arrow table", lambda frame: pa.Table.from_pandas(
        frame.trials.drop(columns=METRIC_COLUMN), preserve_index=False))
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", name) + f".{format}"
    return StreamingResponse(
        stream_table(table, format),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
