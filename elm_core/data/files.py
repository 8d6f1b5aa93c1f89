"""Data directory, checksums and downloads with a progress bar."""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from elm_core.data.errors import DatasetCorrupt, DatasetUnavailable

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


def data_dir(options: dict) -> Path:
    """options['data_dir'], else $ELMSCALE_DATA_DIR, else ~/.cache/elmscale."""
    chosen = options.get("data_dir") or os.environ.get("ELMSCALE_DATA_DIR") or "~/.cache/elmscale"
    return Path(chosen).expanduser()


def md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_text(url: str) -> str:
    """Small text resource (a checksum list); raises DatasetUnavailable when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as error:
        raise DatasetUnavailable(f"cannot fetch {url}: {_reason(error)}") from error


def download(url: str, destination: Path, expected_md5: str | None = None) -> None:
    """Stream url to destination with a rich progress bar, checking the MD5 before the file appears.

    The download goes to a temporary name first so an interrupted transfer never
    leaves a truncated file under the final name.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True) as progress:
                bar = progress.add_task(f"download {destination.name}", total=total)
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(bar, len(chunk))
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DatasetUnavailable(f"download of {url} failed: {_reason(error)}") from error
    if expected_md5 is not None and digest.hexdigest() != expected_md5:
        partial.unlink(missing_ok=True)
        raise DatasetCorrupt(f"download of {url} has md5 {digest.hexdigest()}, expected {expected_md5}")
    partial.replace(destination)


def _reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or error)
