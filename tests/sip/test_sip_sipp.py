"""The UserAgent against real SIPp scenarios (tests/sipp/*.xml) over loopback sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from tests.peers import Sipp, UdpRelay, free_port, free_port_pair, wait_tcp_listening, wait_udp_listening
from voip_sos.aio.user_agent import (
    Answered,
    Call,
    EarlyMedia,
    Ended,
    IncomingCallRequest,
    Key,
    Ringing,
    UserAgent,
)
from voip_sos.config import Config, HostPort, PortRange, RtpConfig, SipConfig
from voip_sos.rtp import Prompt
from voip_sos.sip import CivicAddress, Location
from voip_sos.sip.digest import digest_response

pytestmark = pytest.mark.peers

USER, PASSWORD = "voip-sos", "s3cret"


def _prompt() -> Prompt:
    t = np.arange(8000) / 8000.0
    return Prompt.from_pcm((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), name="tone")


def _config(registrar: int | None = None, expires_s: int = 600) -> Config:
    rtp = free_port_pair()
    return Config(
        sip=SipConfig(
            listen=HostPort("127.0.0.1", 0),
            registrar=HostPort("127.0.0.1", registrar) if registrar else None,
            domain="127.0.0.1",
            username=USER,
            password=PASSWORD,
            expires_s=expires_s,
        ),
        rtp=RtpConfig(ports=PortRange(rtp, rtp + 9)),
    )


@asynccontextmanager
async def _ua(config: Config, **kw: object) -> AsyncIterator[UserAgent]:
    ua = UserAgent(config, **kw)  # type: ignore[arg-type]
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close(timeout_s=2.0)


@asynccontextmanager
async def _sipp(scenario: str, **kw: object) -> AsyncIterator[Sipp]:
    port = free_port()
    with Sipp(scenario, port, **kw) as sipp:  # type: ignore[arg-type]
        if "t1" in kw.get("extra", ()):  # type: ignore[operator]
            await wait_tcp_listening(port, peer=sipp)
        else:
            await wait_udp_listening(port, peer=sipp)
        yield sipp


def _types(call: Call) -> list[type]:
    return [type(e) for e in call.history]


async def _finish(sipp: Sipp, timeout_s: float = 10.0) -> None:
    rc = await sipp.wait_async(timeout_s)
    assert rc == 0, f"sipp exit {rc}\n{sipp.errors()[-2000:]}\n{sipp.output()[-2000:]}"


def _uri(sipp: Sipp) -> str:
    return f"sip:120@127.0.0.1:{sipp.port}"


async def test_answer_then_far_end_bye() -> None:
    async with _sipp("uas_answer_bye") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt(), gap_s=0.2)
        ended = await asyncio.wait_for(call.ended(), 10)
        assert ended.by == "remote" and ended.answered and ended.status == 200
        assert _types(call) == [Ringing, Answered, Ended]
        answered = call.history[1]
        assert isinstance(answered, Answered) and answered.media.codec == "PCMA"
        assert call.media.stats.packets_sent > 50  # ~1.5 s of 20 ms packets
        await _finish(sipp)


async def test_invite_401_then_200() -> None:
    # SIPp 3.6.1's verifyauth checks MD5 only; SHA-256 is checked in the 407 test below.
    algorithm = "MD5"
    keys = {"username": USER, "password": PASSWORD, "algorithm": algorithm}
    async with _sipp("uas_auth_401", keys=keys) as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        call.hangup()
        ended = await asyncio.wait_for(call.ended(), 5)
        assert ended.by == "local"
        await _finish(sipp)
        assert f"algorithm={algorithm}" in sipp.messages()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_invite_407_then_200_with_a_correct_proxy_authorization(algorithm: str) -> None:
    async with _sipp("uas_auth_407", keys={"algorithm": algorithm}) as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)
    log = sipp.messages()
    m = re.search(r"Proxy-Authorization: Digest (.*)", log)
    assert m, log
    f = dict(re.findall(r'(\w+)="?([^",]*)"?', m.group(1)))
    expected = digest_response(
        algorithm=algorithm, username=USER, realm="sipp.test", password=PASSWORD, method="INVITE",
        uri=f["uri"], nonce=f["nonce"], qop="auth", nc=int(f["nc"], 16), cnonce=f["cnonce"],
    )  # fmt: skip
    assert f["response"] == expected


async def test_stale_nonce_is_answered_with_the_new_nonce() -> None:
    async with (
        _sipp("uas_auth_stale", keys={"username": USER, "password": PASSWORD}) as sipp,
        _ua(_config()) as ua,
    ):
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)


async def test_wrong_password_fails_cleanly_after_one_answer() -> None:
    async with _sipp("uas_auth_reject") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        ended = await asyncio.wait_for(call.ended(), 5)
        assert ended.status == 401 and not ended.answered and ended.by == "remote"
        await _finish(sipp)
        assert len(re.findall(r"^INVITE sip:", sipp.messages(), re.M)) == 2


@pytest.mark.parametrize(
    ("scenario", "status", "reason"),
    [("uas_busy", 486, "Busy Here"), ("uas_unavailable", 480, "Temporarily Unavailable")],
)
async def test_refused_call_reports_status(scenario: str, status: int, reason: str) -> None:
    async with _sipp(scenario) as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        ended = await asyncio.wait_for(call.ended(), 5)
        assert (ended.status, ended.reason, ended.by, ended.answered) == (status, reason, "remote", False)
        await _finish(sipp)


async def test_no_answer_then_our_cancel() -> None:
    async with _sipp("uas_no_answer") as sipp, _ua(_config()) as ua:
        # The timeout must outlast SIPp's first answer on a loaded machine (it sends 100 and 180 at
        # once): this test is about what happens after the ringing, not about SIPp's start-up.
        call = await ua.call(_uri(sipp), _prompt(), ring_timeout_s=2.0)
        ended = await asyncio.wait_for(call.ended(), 8)
        assert (ended.by, ended.status, ended.answered) == ("local", 487, False)
        assert _types(call) == [Ringing, Ended]
        await _finish(sipp)


async def test_183_early_media_then_200() -> None:
    async with _sipp("uas_early_media") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        assert _types(call) == [EarlyMedia, Answered]
        early, answered = call.history
        assert isinstance(early, EarlyMedia) and isinstance(answered, Answered)
        assert answered.at - early.at >= 0.9  # the 183 was not taken for the answer
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)


async def test_lost_invites_are_retransmitted_at_t1_doubling() -> None:
    """The relay loses our first three INVITEs; the fourth gets through. Timer A: T1, 2·T1, 4·T1."""
    async with _sipp("uas_answer_wait_bye") as sipp:
        seen: list[int] = []

        def drop_three_invites(data: bytes, direction: str) -> bool:
            if direction == "out" and data.startswith(b"INVITE "):
                seen.append(1)
                return len(seen) <= 3
            return False

        relay = await UdpRelay.start(("127.0.0.1", sipp.port), drop_three_invites)
        try:
            async with _ua(_config()) as ua:
                call = await ua.call(f"sip:120@127.0.0.1:{relay.port}", _prompt())
                assert await asyncio.wait_for(call.answered(), 8) is not None
                call.hangup()
                await asyncio.wait_for(call.ended(), 5)
                await _finish(sipp)
        finally:
            relay.close()
        invites = [t for t, d, data, _ in relay.log if d == "out" and data.startswith(b"INVITE ")]
        gaps = [round((b - a) * 1000, 1) for a, b in itertools.pairwise(invites)]
        print(f"INVITE retransmissions after {gaps} ms (T1 = 500 ms)")
        assert len(gaps) == 3
        for gap, expected in zip(gaps, (500, 1000, 2000), strict=True):
            assert expected - 20 <= gap <= expected + 100


async def test_retransmitted_2xx_is_acked_again() -> None:
    # SIPp's Contact points at a relay that loses our first ACK, so SIPp resends its 200 OK
    # (retrans="500") and we must ACK again, with the very same ACK (§13.2.2.4).
    port = free_port()
    acks: list[bytes] = []

    def drop_first_ack(data: bytes, direction: str) -> bool:
        if direction == "out" and data.startswith(b"ACK "):
            acks.append(data)
            return len(acks) == 1
        return False

    relay = await UdpRelay.start(("127.0.0.1", port), drop_first_ack)
    try:
        with Sipp("uas_2xx_retransmit", port, keys={"contact_port": str(relay.port)}) as sipp:
            await wait_udp_listening(port, peer=sipp)
            async with _ua(_config()) as ua:
                call = await ua.call(_uri(sipp), _prompt())
                assert await asyncio.wait_for(call.answered(), 5) is not None
                for _ in range(40):
                    if len(acks) >= 2:
                        break
                    await asyncio.sleep(0.05)
                call.hangup()
                await asyncio.wait_for(call.ended(), 5)
                await _finish(sipp)
    finally:
        relay.close()
    assert len(acks) == 2 and acks[0] == acks[1]
    assert sipp.messages().count("SIP/2.0 200 OK") >= 3  # 200 to INVITE twice, 200 to BYE
    assert sum(isinstance(e, Answered) for e in call.history) == 1


async def test_reinvite_hold_and_update_resume() -> None:
    async with _sipp("uas_reinvite_update") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        ended = await asyncio.wait_for(call.ended(), 10)
        assert ended.by == "remote" and ended.answered
        await _finish(sipp)
    log = sipp.messages()
    ours = [b for b in log.split("\n\n") if b.startswith("SIP/2.0 200 OK") or "\nSIP/2.0 200 OK" in b]
    assert "a=recvonly" in log and "a=sendrecv" in log, ours


async def test_options_answered_200() -> None:
    async with _ua(_config()) as ua:
        assert ua.local_address is not None
        port = free_port()
        with Sipp("uac_options", port, ("127.0.0.1", ua.local_address.port)) as sipp:
            await _finish(sipp)
            assert "Allow: INVITE" in sipp.messages()


async def test_message_with_401() -> None:
    async with (
        _sipp("uas_message_401", keys={"username": USER, "password": PASSWORD}) as sipp,
        _ua(_config()) as ua,
    ):
        status = await asyncio.wait_for(ua.message(_uri(sipp), "SOS 张三: Zhongguancun St 27, 5F"), 5)
        assert status == 202
        await _finish(sipp)
        assert "Content-Type: text/plain;charset=UTF-8" in sipp.messages()


async def test_register_401_then_423_then_200_and_unregister() -> None:
    port = free_port()
    with Sipp("uas_register", port, keys={"username": USER, "password": PASSWORD}) as sipp:
        await wait_udp_listening(port, peer=sipp)
        cfg = _config(registrar=port, expires_s=60)
        assert cfg.sip.registrar is not None
        # A host name is resolved once at start (never per datagram).
        cfg = dataclasses.replace(
            cfg, sip=dataclasses.replace(cfg.sip, registrar=HostPort("localhost", port))
        )
        async with _ua(cfg) as ua:
            result = await asyncio.wait_for(ua.register(), 10)
            assert result.ok and result.status == 200 and result.expires_s == 300
        await _finish(sipp)
        log = sipp.messages()
        assert "Expires: 300" in log and "Expires: 0" in log


async def test_session_timer_refreshed_with_update() -> None:
    async with _sipp("uas_session_timer") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        await asyncio.sleep(4.5)  # two refreshes, at 2 s and 4 s
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)
        assert len(re.findall(r"^UPDATE sip:", sipp.messages(), re.M)) == 2


async def test_key_sent_as_sip_info() -> None:
    async with _sipp("uas_info") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        for _ in range(20):
            if any(isinstance(e, Key) for e in call.history):
                break
            await asyncio.sleep(0.1)
        keys = [e for e in call.history if isinstance(e, Key)]
        assert [(k.digit, k.source) for k in keys] == [("5", "info")]
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)


async def test_large_invite_with_location_to_udp_only_peer() -> None:
    civic = CivicAddress(country="CN", A1="Beijing", A3="Haidian", RD="Zhongguancun St", HNO="27",
                         FLR="5", ROOM="502", NAM="Wang Li, 82, lives alone; " * 20)  # fmt: skip
    async with _sipp("uas_answer_wait_bye") as sipp, _ua(_config()) as ua:
        assert ua.transport is not None
        ua.transport.sent = []
        loc = Location("pres:uid-7@127.0.0.1", civic, "2026-11-24T19:00:00Z")
        call = await ua.call(_uri(sipp), _prompt(), location=loc, priority="emergency")
        assert await asyncio.wait_for(call.answered(), 5) is not None
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)
        invites = [o for _, o in ua.transport.sent if o.data.startswith(b"INVITE ")]
        assert invites[0].transport == "TCP" and len(invites[0].data) > 1300
        assert invites[1].transport == "UDP"
    log = sipp.messages()
    assert "multipart/mixed" in log and "Geolocation: <cid:" in log and "Priority: emergency" in log


async def test_incoming_invite_answered_with_prompt() -> None:
    answered: list[Call] = []

    async def handler(req: IncomingCallRequest) -> None:
        answered.append(await req.answer(_prompt(), gap_s=0.1))

    async with _ua(_config(), on_incoming=handler) as ua:
        assert ua.local_address is not None
        port = free_port()
        with Sipp("uac_incoming", port, ("127.0.0.1", ua.local_address.port)) as sipp:
            await _finish(sipp)
        (call,) = answered
        ended = await asyncio.wait_for(call.ended(), 5)
        assert ended.by == "remote" and ended.answered
        assert call.media.stats.packets_sent > 30


async def test_incoming_invite_refused_without_handler() -> None:
    async with _ua(_config()) as ua:
        assert ua.local_address is not None
        port = free_port()
        with Sipp("uac_incoming_refused", port, ("127.0.0.1", ua.local_address.port)) as sipp:
            await _finish(sipp)


async def test_call_over_tcp() -> None:
    cfg = _config()
    cfg = dataclasses.replace(cfg, sip=dataclasses.replace(cfg.sip, transport="tcp"))
    async with _sipp("uas_answer_bye", extra=["-t", "t1"]) as sipp, _ua(cfg) as ua:
        assert ua.transport is not None
        ua.transport.sent = []
        call = await ua.call(_uri(sipp), _prompt())
        ended = await asyncio.wait_for(call.ended(), 10)
        assert ended.by == "remote" and ended.answered
        await _finish(sipp)
        assert {o.transport for _, o in ua.transport.sent} == {"TCP"}
    assert "Contact: <sip:voip-sos@127.0.0.1:" in sipp.messages() and ";transport=tcp>" in sipp.messages()


async def test_422_retried_with_the_min_se_asked_for() -> None:
    async with _sipp("uas_session_422") as sipp, _ua(_config()) as ua:
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        assert ua.agent.calls[call.call_id].refresh_at is not None  # we are the refresher now
        call.hangup()
        await asyncio.wait_for(call.ended(), 5)
        await _finish(sipp)
        assert "X-Session-Expires-Seen: 90" in sipp.messages()


async def test_call_left_open_by_a_crash_is_ended_after_restart() -> None:
    # A restarted service binds its configured sip.listen port again (SIPp answers there too).
    cfg = _config()
    cfg = dataclasses.replace(
        cfg, sip=dataclasses.replace(cfg.sip, listen=HostPort("127.0.0.1", free_port()))
    )
    async with _sipp("uas_answer_wait_bye") as sipp:
        ua = UserAgent(cfg)
        await ua.start()
        call = await ua.call(_uri(sipp), _prompt())
        assert await asyncio.wait_for(call.answered(), 5) is not None
        state = json.loads(json.dumps(call.export()))  # what the incident store would keep
        await ua.close(unregister=False, hangup=False)  # the process dies, the call stays up
        assert sipp.proc is not None and sipp.proc.poll() is None
        async with _ua(cfg) as restarted:
            ended = await asyncio.wait_for(restarted.end_restored(state), 5)
            assert ended.by == "local"
        await _finish(sipp)
        assert "BYE sip:" in sipp.messages()


async def test_sms_transport_over_message() -> None:
    from voip_sos.notify.sip_message import SipMessageTransport
    from voip_sos.notify.sms import SmsTransport

    async with (
        _sipp("uas_message_401", keys={"username": USER, "password": PASSWORD}) as sipp,
        _ua(_config()) as ua,
    ):
        sms: SmsTransport = SipMessageTransport(ua)
        result = await asyncio.wait_for(sms.send(_uri(sipp), "SOS"), 5)
        assert result.status == 202 and result.accepted and result.delivered is None
        await _finish(sipp)
