"""The emergency text over SIP MESSAGE (RFC 3428): `SmsTransport` for `voip_sos.notify.sms`."""

from __future__ import annotations

from voip_sos.aio.user_agent import UserAgent
from voip_sos.notify.sms import SmsResult

__all__ = ["SipMessageSms"]


class SipMessageSms:
    """Sends each text as one MESSAGE through the user agent. A 2xx means the PBX accepted it
    (202 Accepted is the usual answer); delivery to the handset is not reported by SIP."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    async def send(self, number: str, text: str) -> SmsResult:
        status = await self.ua.message(number, text)
        accepted = status is not None and 200 <= status < 300
        return SmsResult(status=status, accepted=accepted, delivered=None)
