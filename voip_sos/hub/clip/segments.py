"""One camera's rolling buffer as an index of segments (sans-IO: no files, no clock, no ffmpeg).

ffmpeg's segment muxer writes the stream as short MPEG-TS files, each starting at a keyframe, and
reports each finished one (name, media start, media end). The recorder adds it here with the
wall-clock time it was closed; its wall start is that minus its media duration. From this list
alone the index answers what the buffer holds, where the gaps are (a camera that dropped and came
back: the next segment starts later than the last one ended), which segments make up "the last N
seconds before t" (cut at segment, i.e. keyframe, boundaries), and which segments are old enough
(or over the disk cap) to delete, never one that a clip being cut still holds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["GAP_TOLERANCE_S", "Gap", "Segment", "SegmentIndex", "Selection"]

GAP_TOLERANCE_S = 1.0
"""Wall-clock jitter between segments (closing, RTSP delivery) that is not a gap."""
ENOUGH_SLACK_S = 0.05
"""Segment durations come as 1.999989 s: fifteen of them are "30 s", not a reason to take a 16th."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One finished segment file."""

    name: str
    """File name inside the camera's folder."""
    run: str
    """The ffmpeg run that wrote it (a new run after every reconnection)."""
    end: float
    """Wall clock (s since 1970) when ffmpeg closed it: about the time of its last frame."""
    duration: float
    """Media duration (s), from ffmpeg's segment list."""
    size: int
    """Bytes on disk."""

    @property
    def start(self) -> float:
        return self.end - self.duration

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Segment:
        d = json.loads(line)
        return cls(str(d["name"]), str(d["run"]), float(d["end"]), float(d["duration"]), int(d["size"]))


@dataclass(frozen=True, slots=True)
class Gap:
    """Wall-clock time the buffer has no video for (camera unreachable, hub down)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Selection:
    """The segments of a clip, oldest first, and the gaps between them."""

    segments: tuple[Segment, ...]
    gaps: tuple[Gap, ...]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def start(self) -> float:
        return self.segments[0].start if self.segments else 0.0

    @property
    def end(self) -> float:
        return self.segments[-1].end if self.segments else 0.0


class SegmentIndex:
    """The segments of one camera, oldest first."""

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        self._segments: list[Segment] = sorted(segments, key=lambda s: s.end)

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def buffered_s(self) -> float:
        return sum(s.duration for s in self._segments)

    @property
    def last_end(self) -> float | None:
        return self._segments[-1].end if self._segments else None

    def add(self, segment: Segment) -> Gap | None:
        """Append a finished segment; return the gap before it, if there is one."""
        before = self._segments[-1] if self._segments else None
        self._segments.append(segment)
        if before is not None and segment.end < before.end:
            self._segments.sort(key=lambda s: s.end)  # a wall clock stepped back (NTP): keep order
        if before is not None and segment.start - before.end > GAP_TOLERANCE_S:
            return Gap(before.end, segment.start)
        return None

    def gaps(self, segments: Sequence[Segment] | None = None) -> tuple[Gap, ...]:
        """The gaps between consecutive segments (of `segments`, default the whole buffer)."""
        segs = self._segments if segments is None else list(segments)
        return tuple(
            Gap(a.end, b.start) for a, b in itertools.pairwise(segs) if b.start - a.end > GAP_TOLERANCE_S
        )

    def covers(self, at: float) -> bool:
        """A finished segment reaches `at` (so a clip ending at `at` can be cut)."""
        last = self.last_end
        return last is not None and last >= at

    def select(self, until: float, seconds: float) -> Selection:
        """The newest segments that start before `until`, back until they hold at least `seconds`
        of video (or the buffer runs out): the clip is `seconds` long to within one segment, and
        starts and ends on keyframes. Video across a gap is joined; the gap is reported."""
        picked: list[Segment] = []
        total = 0.0
        for seg in reversed(self._segments):
            if seg.start >= until:
                continue
            if total >= seconds - ENOUGH_SLACK_S:
                break
            picked.append(seg)
            total += seg.duration
        picked.reverse()
        return Selection(tuple(picked), self.gaps(picked))

    def prune(
        self, now: float, keep_s: float, max_bytes: int, held: Iterable[tuple[float, float]] = ()
    ) -> list[Segment]:
        """Remove (and return, for deleting) segments that ended more than `keep_s` before `now`,
        then the oldest while the buffer is over `max_bytes`; never a segment inside a held range."""
        holds = list(held)

        def is_held(seg: Segment) -> bool:
            return any(seg.end > lo and seg.start < hi for lo, hi in holds)

        gone: list[Segment] = []
        keep: list[Segment] = []
        for seg in self._segments:
            if seg.end < now - keep_s and not is_held(seg):
                gone.append(seg)
            else:
                keep.append(seg)
        total = sum(s.size for s in keep)
        while total > max_bytes:
            oldest = next((s for s in keep if not is_held(s)), None)
            if oldest is None or oldest is keep[-1]:
                break  # never the newest: a clip always has something to show
            keep.remove(oldest)
            gone.append(oldest)
            total -= oldest.size
        self._segments = keep
        return gone
