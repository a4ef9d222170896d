"""The SMS transport of today: SIP MESSAGE (RFC 3428) through the PBX, which hands it to the SMS centre.

A 2xx means the PBX accepted the text, not that a phone received it (a 202 says exactly that); it
is recorded as accepted, never as delivered.
"""

from __future__ import annotations

from typing import Protocol

from voip_sos.notify.sms import SmsResult

__all__ = ["SipMessageTransport"]


class _Messenger(Protocol):
    async def message(self, number: str, text: str) -> int | None: ...


class SipMessageTransport:
    def __init__(self, ua: _Messenger) -> None:
        self._ua = ua

    async def send(self, number: str, text: str) -> SmsResult:
        status = await self._ua.message(number, text)
        accepted = status is not None and 200 <= status < 300
        return SmsResult(status=status, accepted=accepted, delivered=None)
