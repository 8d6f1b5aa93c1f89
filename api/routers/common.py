"""Path parameters shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from api.schemas import PRINTABLE

SweepName = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE, description="The sweep's name")]
TrialId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", description="The trial's id (hex)")]
