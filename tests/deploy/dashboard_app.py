"""The API app with the dashboard router, for serving under uvicorn before api.app includes the router itself."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import NoMatchFound

import api.app
import api.dashboard


def create_app() -> FastAPI:
    app = api.app.create_app()
    try:
        app.url_path_for("dashboard_page")
    except NoMatchFound:
        app.include_router(api.dashboard.router)
    return app
