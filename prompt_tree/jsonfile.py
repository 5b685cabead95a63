"""Reading the small JSON side files of a checkpoint (config, generation config, tokenizer config, index)."""
from __future__ import annotations

import json
import os
from typing import Any


def read_json_object(path: str, error: type[Exception], *, strict: bool) -> dict[str, Any]:
    """The JSON object in `path`, or {} when the file does not exist (side files are optional).

    An unreadable or malformed file raises `error` naming the path. A file whose top level is not an object raises
    too when `strict` (a checkpoint index must be one); otherwise it reads as {} (a tokenizer side file written by
    some other tool is simply ignored).
    """
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from e
    if isinstance(data, dict):
        return data
    if strict:
        raise error(f"{path} is not a JSON object")
    return {}
