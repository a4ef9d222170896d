"""The exception tree every part of voip-sos raises from (STYLE.md section 5)."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "DirectoryError",
    "LocalProtocolError",
    "MediaError",
    "ProtocolError",
    "RemoteProtocolError",
    "VoipSosError",
]


class VoipSosError(Exception):
    """Base of every error this package raises on purpose."""


class ProtocolError(VoipSosError):
    """A protocol rule was broken; `status_hint` is the SIP status to answer with."""

    def __init__(self, msg: str, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We asked a protocol core for something illegal."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something illegal."""


class AuthError(VoipSosError):
    """A digest challenge we cannot (or may no longer) answer."""


class ConfigError(VoipSosError):
    """One or more configuration problems; each names the dotted key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class MediaError(VoipSosError):
    """Audio could not be rendered, encoded or sent."""


class DirectoryError(VoipSosError):
    """A directory operation was refused (bad value, conflict, unknown subscriber)."""
