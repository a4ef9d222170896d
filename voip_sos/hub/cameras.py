"""The hub's cameras (`clip.cameras` in hub.yaml): one validated entry per camera.

A camera is a name (a folder, a URL path level and what the family sees), the RTSP URL of the stream
to keep (usually the low-resolution sub-stream), its credentials and how to treat its video: `copy`
H.264 as it comes, `transcode` anything else (H.265, MJPEG) to low-resolution H.264 because browsers
do not all play H.265, or `auto` (probe the stream at connection and decide). With Frigate as the
clip source (`clip.source: frigate`) a camera needs only its Frigate name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from voip_sos.config_values import _json_if_str, _show

__all__ = ["CAMERA_MODES", "Camera", "parse_cameras"]

CAMERA_MODES = ("auto", "copy", "transcode")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_FIELDS = {"name", "url", "username", "password", "mode", "frigate_camera"}


@dataclass(frozen=True, slots=True)
class Camera:
    """One camera the hub keeps a rolling buffer of (or asks Frigate about)."""

    name: str
    """a-z, 0-9, '_' and '-' (up to 32): its buffer folder and its part of the upload URL."""
    url: str | None = None
    """rtsp://host[:port]/path of the stream to keep, without credentials."""
    username: str | None = None
    password: str = ""
    mode: str = "auto"
    """auto (probe at connection), copy (H.264 as is) or transcode (to low-resolution H.264)."""
    frigate_camera: str | None = None
    """The camera's name in Frigate (defaults to `name`)."""

    def source_url(self) -> str:
        """The URL ffmpeg opens: credentials percent-encoded into it (never logged)."""
        assert self.url is not None
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        auth = quote(self.username, safe="") + ":" + quote(self.password, safe="")
        return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))

    def redact(self, text: str) -> str:
        """`text` (an ffmpeg message, which may quote the URL) without the password, raw or encoded."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "********")
        return text

    def shown(self) -> dict[str, object]:
        """For `hub check`: the password masked."""
        return {
            "name": self.name,
            "url": self.url,
            "username": self.username,
            "password": "********" if self.password else "",
            "mode": self.mode,
            "frigate_camera": self.frigate_camera,
        }

    @property
    def in_frigate(self) -> str:
        return self.frigate_camera or self.name


def _camera(item: object, index: int) -> Camera:
    where = f"item {index + 1}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping with name, url, username, password, mode")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"{where}: name: expected a-z, 0-9, '_' or '-' (1-32 characters), got {_show(name)}")
    where = f"{where} ({name})"
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]} (known: {', '.join(sorted(_FIELDS))})")
    url = item.get("url")
    if url in (None, ""):
        url = None
    elif (
        not isinstance(url, str)
        or urlsplit(url).scheme not in ("rtsp", "rtsps")
        or not urlsplit(url).hostname
    ):
        raise ValueError(f"{where}: url: expected rtsp://host[:port]/path, got {_show(url)}")
    elif urlsplit(url).username is not None:
        raise ValueError(f"{where}: url: put the credentials in username and password, not in the URL")
    mode = item.get("mode", "auto")
    if mode not in CAMERA_MODES:
        raise ValueError(f"{where}: mode: expected one of {', '.join(CAMERA_MODES)}, got {_show(mode)}")
    strings: dict[str, str | None] = {}
    for key in ("username", "password", "frigate_camera"):
        value = item.get(key)
        if value is not None and not isinstance(value, str | int):
            raise ValueError(f"{where}: {key}: expected a string, got {_show(value)}")
        strings[key] = None if value in (None, "") else str(value)
    return Camera(
        name=name,
        url=url,
        username=strings["username"],
        password=strings["password"] or "",
        mode=str(mode),
        frigate_camera=strings["frigate_camera"],
    )


def parse_cameras(value: object) -> tuple[Camera, ...]:
    """A list of camera mappings (a JSON list in VOIP_HUB_CLIP_CAMERAS); names must be unique."""
    value = _json_if_str(value)
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise ValueError(f"expected a list of cameras, got {_show(value)}")
    cameras = tuple(_camera(item, i) for i, item in enumerate(value))
    names = [c.name for c in cameras]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"camera name {name!r} is used twice")
    return cameras
