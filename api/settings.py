"""Settings of the API service, read from the environment by default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from resultsdb import database_url

READ_TOKEN_REQUIRED_ENV = "ELMSCALE_API_READ_TOKEN_REQUIRED"
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ApiSettings:
    """database_url: resultsdb's URL (ELMSCALE_DATABASE_URL, else the SQLite default);
    read_token_required: reads need a bearer token too (ELMSCALE_API_READ_TOKEN_REQUIRED=1);
    feed_poll_s: how often an open feed looks for new events;
    feed_keep_alive_s: after this long without an event the feed sends a comment line (proxies close idle streams);
    read_timeout_s: Postgres cancels a read of the store that create_app opens after this long (answered 503), so no
    request holds a connection for long;
    heavy_reads: how many trial queries reading more than HEAVY_METRIC_FIELDS metric fields (filters, columns, sort)
    run at once; the others wait up to heavy_read_wait_s for a turn, then get 503. The rest of the connection pool
    stays free for everything else, however many such queries arrive."""

    database_url: str = field(default_factory=database_url)
    read_token_required: bool = False
    feed_poll_s: float = 0.5
    feed_keep_alive_s: float = 15.0
    read_timeout_s: float = 10.0
    heavy_reads: int = 2
    heavy_read_wait_s: float = 10.0

    @classmethod
    def from_env(cls) -> ApiSettings:
        flag = os.environ.get(READ_TOKEN_REQUIRED_ENV, "").strip().lower()
        return cls(database_url=database_url(), read_token_required=flag in TRUE_WORDS)
