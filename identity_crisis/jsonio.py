"""JSON files the project writes (metrics.json, done.json, report.json, theory.json): strict
JSON, written atomically so a reader (the sweep runner, a report) never sees half a file."""

from __future__ import annotations

import json
import math
from pathlib import Path


def to_json(value):
    """Plain JSON values: NaN and infinities become null (strict JSON for other tools), tuples
    lists, tensor and numpy scalars numbers, anything else unknown its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        return to_json(value.item())
    if hasattr(value, "tolist"):
        return to_json(value.tolist())
    return str(value)


def write_json(path: str | Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_json(data), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
