"""Reading small JSON files with errors that name the file."""

from __future__ import annotations

import json
from typing import Any


def read_json_object(file: str) -> dict[str, Any]:
    """The JSON object in `file`; a ValueError naming the file if it is not valid UTF-8 JSON or
    not an object."""
    try:
        with open(file, "rb") as f:
            out = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(out, dict):
        raise ValueError(f"{file}: expected a JSON object, got a {type(out).__name__}")
    return out
