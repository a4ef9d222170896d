"""The hub's state file: one small JSON document, replaced atomically on every change.

Written to a temporary file in the same folder, flushed and fsync'd, then renamed over the old one
(POSIX rename is atomic), and the folder fsync'd, so a power cut leaves either the old or the new
state, never a torn one. A temporary code that outlives the hub's memory is a door left open.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["load_state", "save_state"]

log = logging.getLogger(__name__)
STATE_VERSION = 1


def load_state(path: Path) -> dict[str, Any]:
    """The saved state, or an empty one when there is no file yet. A corrupt file is kept aside."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown state version")
    except ValueError as exc:
        aside = path.with_suffix(path.suffix + ".corrupt")
        os.replace(path, aside)
        log.error("hub state file unreadable, moved aside", extra={"path": str(path), "error": str(exc)})
        return {}
    return data


def save_state(path: Path, data: dict[str, Any]) -> None:
    """Replace the state file atomically with `data` (blocking: a few hundred bytes, local disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps({"version": STATE_VERSION, **data}, indent=1, sort_keys=True)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
