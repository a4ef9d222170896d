"""Kamailio as registrar + authenticating proxy with Record-Route between our UserAgent and baresip:
register, call both ways, BYE both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from tests.peers import Baresip, Kamailio, free_port, free_port_pair, wait_udp_listening
from voip_sos.aio.user_agent import Answered, Call, IncomingCallRequest, UserAgent
from voip_sos.config import Config, HostPort, PortRange, RtpConfig, SipConfig
from voip_sos.rtp import Prompt

pytestmark = pytest.mark.peers

USERS = {"voip-sos": "s3cret", "bob": "b0b-pw"}


def _prompt() -> Prompt:
    t = np.arange(4000) / 8000.0
    return Prompt.from_pcm((np.sin(2 * np.pi * 660 * t) * 6000).astype(np.int16))


@asynccontextmanager
async def _setup(on_incoming: object = None) -> AsyncIterator[tuple[UserAgent, Kamailio, Baresip]]:
    kport, bport = free_port(), free_port()
    with Kamailio(kport, USERS) as kam:
        await wait_udp_listening(kport, peer=kam)
        with Baresip(bport, "bob", registrar=("127.0.0.1", kport), password=USERS["bob"]) as phone:
            await phone.wait_output("200 OK", 5)  # baresip's own REGISTER went through
            rtp = free_port_pair()
            cfg = Config(
                sip=SipConfig(
                    listen=HostPort("127.0.0.1", 0),
                    registrar=HostPort("127.0.0.1", kport),
                    proxy=HostPort("127.0.0.1", kport),
                    domain="127.0.0.1",
                    username="voip-sos",
                    password=USERS["voip-sos"],
                ),
                rtp=RtpConfig(ports=PortRange(rtp, rtp + 9)),
            )
            ua = UserAgent(cfg, on_incoming=on_incoming)  # type: ignore[arg-type]
            await ua.start()
            try:
                result = await asyncio.wait_for(ua.register(), 5)
                assert result.ok, result
                yield ua, kam, phone
            finally:
                await ua.close(timeout_s=2.0)


async def test_register_call_through_proxy_and_bye_both_ways() -> None:
    async with _setup() as (ua, kam, phone):
        # 1. We call bob via Kamailio (407 answered), bob auto-answers, we hang up.
        call = await ua.call("bob", _prompt(), gap_s=0.2)
        answered = await asyncio.wait_for(call.answered(), 5)
        assert isinstance(answered, Answered)
        dialog = ua.agent.calls[call.call_id].dialog
        assert dialog is not None and dialog.route_set and f":{kam.port};" in dialog.route_set[0]
        await asyncio.sleep(0.5)
        call.hangup()
        ended = await asyncio.wait_for(call.ended(), 5)
        assert ended.by == "local" and ended.answered
        # 2. Again, and bob hangs up; his BYE reaches us through the Record-Route.
        call2 = await ua.call("bob", _prompt())
        assert await asyncio.wait_for(call2.answered(), 5) is not None
        await asyncio.sleep(0.3)
        await phone.command("hangup")
        ended2 = await asyncio.wait_for(call2.ended(), 5)
        assert ended2.by == "remote" and ended2.answered
        assert "in-dialog BYE" in kam.output()


async def test_incoming_call_through_proxy() -> None:
    calls: list[Call] = []

    async def handler(req: IncomingCallRequest) -> None:
        calls.append(await req.answer(_prompt(), gap_s=0.2))

    async with _setup(on_incoming=handler) as (_ua, kam, phone):
        await phone.command("dial", "sip:voip-sos@127.0.0.1")
        for _ in range(50):
            if calls and calls[0].history:
                break
            await asyncio.sleep(0.1)
        (call,) = calls
        assert isinstance(await asyncio.wait_for(call.answered(), 5), Answered)
        await asyncio.sleep(0.3)
        call.hangup()
        ended = await asyncio.wait_for(call.ended(), 5)
        assert ended.by == "local"
        assert "in-dialog BYE" in kam.output()


async def test_kamailio_423_then_registered_with_min_expires() -> None:
    kport = free_port()
    with Kamailio(kport, USERS) as kam:
        await wait_udp_listening(kport, peer=kam)
        rtp = free_port_pair()
        cfg = Config(
            sip=SipConfig(
                listen=HostPort("127.0.0.1", 0),
                registrar=HostPort("127.0.0.1", kport),
                domain="127.0.0.1",
                username="voip-sos",
                password=USERS["voip-sos"],
                expires_s=30,  # below Kamailio's min_expires (60)
            ),
            rtp=RtpConfig(ports=PortRange(rtp, rtp + 9)),
        )
        ua = UserAgent(cfg)
        await ua.start()
        try:
            assert ua.transport is not None
            statuses: list[str] = []
            ua.transport.trace = lambda d, data, addr, t: statuses.append(data.split(b"\r\n", 1)[0].decode())
            result = await asyncio.wait_for(ua.register(), 5)
            assert result.ok and result.expires_s == 60
            assert [s for s in statuses if s.startswith("SIP/2.0")] == [
                "SIP/2.0 401 Unauthorized", "SIP/2.0 423 Interval Too Brief", "SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK",
            ]  # fmt: skip
        finally:
            await ua.close(timeout_s=2.0)
