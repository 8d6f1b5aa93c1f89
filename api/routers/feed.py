"""Live feed: the events table as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Store, get_settings, require_reader
from api.errors import ERROR_RESPONSES
from api.schemas import INT64_MAX, PRINTABLE, EventOut
from api.settings import ApiSettings
from resultsdb import EventInfo, ResultsStore

router = APIRouter(tags=["feed"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)

EVENTS_PER_READ = 500
MAX_STREAM_S = 3600.0
SSE_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "description": "The event id"},
        "event": {"type": "string", "description": "The event kind"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": EventOut.model_json_schema()},
    },
}


def sse_message(event: EventInfo) -> str:
    data = EventOut.model_validate(event).model_dump_json()
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


async def event_stream(
    request: Request,
    store: ResultsStore,
    *,
    after: int,
    sweep: str | None,
    max_events: int | None,
    timeout_s: float,
    settings: ApiSettings,
) -> AsyncIterator[str]:
    """Events after `after`, then new ones as they commit; ends on disconnect, after max_events, or at timeout."""
    deadline = time.monotonic() + timeout_s
    last_sent = time.monotonic()
    sent = 0
    while max_events is None or sent < max_events:
        wanted = EVENTS_PER_READ if max_events is None else min(EVENTS_PER_READ, max_events - sent)
        events = await run_in_threadpool(store.events_since, after, sweep=sweep, limit=wanted)
        for event in events:
            yield sse_message(event)
            after, sent, last_sent = event.id, sent + 1, time.monotonic()
        if len(events) == wanted:
            continue  # more may be waiting: read on without sleeping
        if await request.is_disconnected() or time.monotonic() >= deadline:
            return
        if time.monotonic() - last_sent >= settings.feed_keep_alive_s:
            yield ": keep-alive\n\n"  # keeps proxies from closing an idle stream
            last_sent = time.monotonic()
        await asyncio.sleep(min(settings.feed_poll_s, max(0.0, deadline - time.monotonic())))


@router.get(
    "/feed",
    response_class=StreamingResponse,
    summary="Server-Sent Events of the events table (trial started/result/completed/failed, sweep state)",
    description="Each message has `id:` (the event id), `event:` (its kind) and `data:` (JSON, schema EventOut). "
    "A client that reconnects with `Last-Event-ID` (EventSource does) gets every event after that id. The stream "
    "ends after `max_events` events or `timeout` seconds, whichever comes first; EventSource then reconnects.",
    responses={200: {"content": {"text/event-stream": {"schema": SSE_MESSAGE_SCHEMA}}, "description": "The stream"}},
)
async def feed(
    request: Request,
    store: Store,
    settings: Annotated[ApiSettings, Depends(get_settings)],
    sweep: Annotated[str | None, Query(min_length=1, max_length=200, pattern=PRINTABLE,
                                       description="Only this sweep's events")] = None,
    after: Annotated[int, Query(ge=0, le=INT64_MAX,
                                description="Start after this event id (Last-Event-ID wins when sent)")] = 0,
    max_events: Annotated[int | None, Query(ge=1, le=1_000_000,
                                            description="End the stream after this many events")] = None,
    timeout: Annotated[float, Query(ge=0, le=MAX_STREAM_S,
                                    description="End the stream after this many seconds")] = 300.0,
    last_event_id: Annotated[str | None, Header(max_length=32, description="Resume after this event id")] = None,
) -> StreamingResponse:
    if last_event_id is not None:
        if not re.fullmatch(r"[0-9]{1,18}", last_event_id.strip()):
            raise HTTPException(422, f"Last-Event-ID {last_event_id!r}: expected an event id (a whole number)")
        after = int(last_event_id)
    if sweep is not None:
        await run_in_threadpool(store.find_sweep, sweep)  # 404 for an unknown sweep rather than an empty stream
    stream = event_stream(
        request, store, after=after, sweep=sweep, max_events=max_events, timeout_s=timeout, settings=settings
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
