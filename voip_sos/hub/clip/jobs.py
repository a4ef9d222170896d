"""Clip jobs: what a press asks for, which incident it belongs to, and how far each clip got.

A press (the STB's instruction, or the backend's incident context when the instruction never
reached the hub) opens a job: for every camera a `recent` clip (the last `clip.first_s`) and a
`full` one (`clip.clip_s`). The job learns its incident, upload URL and token from the context; a
second press or context within `JOIN_S` joins it (one press, one set of clips). Each job is a JSON
file in the outbox next to its cut clips, so a hub restart resumes the uploads instead of losing
them. `match_press()` / `match_context()` are the pairing rules, pure functions of the open jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voip_sos.hub.clip.cut import ClipFile

__all__ = ["JOIN_S", "ClipItem", "ClipJob", "load_jobs", "match_context", "match_press", "save_job"]

JOIN_S = 120.0
"""A press or a context this close to an open job's press belongs to that job."""
TERMINAL = frozenset({"uploaded", "failed"})


@dataclass(slots=True)
class ClipItem:
    """One clip of a job."""

    camera: str
    part: str
    """recent or full."""
    seconds: float
    state: str = "pending"
    """pending (not cut yet) -> cut -> uploaded; or failed."""
    clip: ClipFile | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, object]:
        return {
            "camera": self.camera,
            "part": self.part,
            "seconds": self.seconds,
            "state": self.state,
            "clip": self.clip.to_dict() if self.clip else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ClipItem:
        clip = d.get("clip")
        return cls(
            camera=str(d["camera"]),
            part=str(d["part"]),
            seconds=float(str(d["seconds"])),
            state=str(d.get("state", "pending")),
            clip=ClipFile.from_dict(clip) if isinstance(clip, dict) else None,
            error=None if d.get("error") is None else str(d["error"]),
        )


@dataclass(slots=True)
class ClipJob:
    """The clips of one press."""

    id: str
    press_at: float
    """Wall clock of the press as the hub saw it: the clips end at the first keyframe after it."""
    incident: str | None = None
    upload_url: str | None = None
    upload_token: str | None = None
    items: list[ClipItem] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(i.done for i in self.items)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "press_at": self.press_at,
                "incident": self.incident,
                "upload_url": self.upload_url,
                "upload_token": self.upload_token,
                "items": [i.to_dict() for i in self.items],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ClipJob:
        d = json.loads(text)
        return cls(
            id=str(d["id"]),
            press_at=float(d["press_at"]),
            incident=d.get("incident"),
            upload_url=d.get("upload_url"),
            upload_token=d.get("upload_token"),
            items=[ClipItem.from_dict(i) for i in d.get("items", [])],
        )


def match_press(jobs: Sequence[ClipJob], now: float) -> ClipJob | None:
    """The open job a press at `now` joins (a repeated press), or None for a new job."""
    recent = [j for j in jobs if abs(now - j.press_at) <= JOIN_S]
    return max(recent, key=lambda j: j.press_at) if recent else None


def match_context(jobs: Sequence[ClipJob], incident: str, now: float) -> ClipJob | None:
    """The job an incident context belongs to: the one already bound to that incident, else the
    newest unbound job pressed within `JOIN_S` (the instruction arrived first); None = new job."""
    for job in jobs:
        if job.incident == incident:
            return job
    unbound = [j for j in jobs if j.incident is None and abs(now - j.press_at) <= JOIN_S]
    return max(unbound, key=lambda j: j.press_at) if unbound else None


def save_job(folder: Path, job: ClipJob) -> None:
    """Write `job.json` in the job's folder atomically (it carries the upload token: owner-only)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(job.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_jobs(outbox: Path) -> tuple[list[ClipJob], list[Path]]:
    """Jobs left in the outbox by an earlier run, and folders that hold no readable job."""
    jobs: list[ClipJob] = []
    broken: list[Path] = []
    if not outbox.is_dir():
        return jobs, broken
    for folder in sorted(p for p in outbox.iterdir() if p.is_dir()):
        try:
            jobs.append(ClipJob.from_json((folder / "job.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            broken.append(folder)
    return jobs, broken
