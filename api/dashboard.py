"""The lab dashboard: one HTML page at `/` and its static files, no build step and no CDN.

The page reads only the public API under /api/v1 and subscribes to /api/v1/feed (Server-Sent Events),
so it shows exactly what any other API client sees. Its charts are SVG drawn by static/plot.js.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Served by name from this fixed list, so no request path ever reaches the filesystem.
STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in MEDIA_TYPES}
# The page and its scripts change together on upgrade; revalidating keeps a lab's browsers from mixing versions.
NO_STALE_COPIES = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no static file named {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_STALE_COPIES)


@router.get("/")
def dashboard_page() -> FileResponse:
    return _file("index.html")


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    return _file(name)
