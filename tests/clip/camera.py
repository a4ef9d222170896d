"""Test cameras and reading clips back: the RTSP stand-in as a process, the pixel-coded frame times.

`RtspCamera` runs tests/clip/rtsp_camera.py under Debian's /usr/bin/python3 (python3-gi and
gst-rtsp-server are Debian packages, not in the venv) as a `Peer`: stopped by PID, also on failure.
`frame_times()` decodes a clip with ffmpeg (scaled back to the camera's 320x240, grey) and reads
the millisecond timestamp each frame carries in its two bands of black/white blocks.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.peers import Peer, free_port, wait_tcp_listening

SCRIPT = Path(__file__).with_name("rtsp_camera.py")
DEBIAN_PYTHON = "/usr/bin/python3"
WIDTH, HEIGHT = 320, 240
BITS, BLOCK_W, BLOCK_H, LEFT = 48, 13, 16, 4
BANDS_Y = (0, 32)


class RtspCamera(Peer):
    """GStreamer's RTSP server with live (pixel-timed) and file mounts on a loopback port."""

    def __init__(self, *, live: dict[str, str] | None = None, files: dict[str, str] | None = None,
                 port: int | None = None, user: str = "", password: str = "", fps: int = 10,
                 gop: int = 10, kbps: int = 300) -> None:  # fmt: skip
        self.port = port or free_port()
        argv = [DEBIAN_PYTHON, str(SCRIPT), "--port", str(self.port), "--fps", str(fps), "--gop", str(gop)]
        argv += ["--kbps", str(kbps)]
        for name, codec in (live or {}).items():
            argv += ["--live", f"{name}:{codec}"]
        for name, spec in (files or {}).items():  # "PATH" or "PATH:h265"
            argv += ["--file", f"{name}:{spec}"]
        if user:
            argv += ["--user", user, "--password", password]
        super().__init__(argv, name="rtsp-camera")

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    async def ready(self, timeout_s: float = 10.0) -> None:
        await wait_tcp_listening(self.port, timeout_s, peer=self)


def _band(frame: bytes, y0: int) -> int:
    value = 0
    for half in range(2):
        y = y0 + half * BLOCK_H + BLOCK_H // 2
        for i in range(24):
            x = LEFT + i * BLOCK_W + BLOCK_W // 2
            value = (value << 1) | (1 if frame[y * WIDTH + x] > 128 else 0)
    return value


@dataclass(frozen=True)
class FrameTimes:
    """The coded wall-clock times (ms) of a clip's frames, in decoding order."""

    times_ms: list[int]
    unreadable: int
    """Frames whose two bands disagree (should be none)."""

    @property
    def first_s(self) -> float:
        return self.times_ms[0] / 1000

    @property
    def last_s(self) -> float:
        return self.times_ms[-1] / 1000

    def largest_jump_s(self) -> float:
        return max((b - a for a, b in zip(self.times_ms, self.times_ms[1:], strict=False)), default=0) / 1000


def frame_times(clip: Path) -> FrameTimes:
    """Decode every frame of `clip` and read its pixel-coded time."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-vf", f"scale={WIDTH}:{HEIGHT}",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    size = WIDTH * HEIGHT
    times: list[int] = []
    bad = 0
    for i in range(len(raw) // size):
        frame = raw[i * size : (i + 1) * size]
        a, b = _band(frame, BANDS_Y[0]), _band(frame, BANDS_Y[1])
        if a != b:
            bad += 1
            continue
        times.append(a)
    return FrameTimes(times, bad)


def pts_steps_s(clip: Path) -> list[float]:
    """The steps between a clip's video frames on its own timeline (presentation order)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
         "-of", "csv=p=0", str(clip)],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    pts = sorted(float(line.strip().rstrip(",")) for line in out.splitlines() if line.strip())
    return [b - a for a, b in itertools.pairwise(pts)]


def probe(clip: Path) -> dict[str, object]:
    """ffprobe's view of a clip: codec, size, duration, and whether the moov comes first."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height:format=duration",
         "-of", "json", str(clip)],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    info = json.loads(out)
    stream = info["streams"][0]
    boxes = top_level_boxes(clip)
    return {
        "codec": stream["codec_name"],
        "width": int(stream["width"]),
        "height": int(stream["height"]),
        "duration_s": float(info["format"]["duration"]),
        "faststart": "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"),
    }


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (ftyp, moov, mdat ... for +faststart)."""
    data = path.read_bytes()
    boxes: list[str] = []
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8 : at + 16], "big")
        elif size == 0:
            size = len(data) - at
        if size < 8:
            break
        boxes.append(kind)
        at += size
    return boxes
