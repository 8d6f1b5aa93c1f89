"""Deterministic trial ids: a replayed or re-planned trial maps to the same row."""

from __future__ import annotations

import hashlib
import json
from typing import Any

TRIAL_ID_LENGTH = 16


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs serialise identically."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def trial_id(sweep_name: str, config: dict[str, Any], seed: int) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of (sweep name, resolved config, seed)."""
    payload = canonical_json({"sweep": sweep_name, "config": config, "seed": int(seed)})
    return hashlib.sha256(payload.encode()).hexdigest()[:TRIAL_ID_LENGTH]
