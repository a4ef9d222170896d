"""The media process: what only a process of its own can get wrong -- it dies under its calls,
`serve` dies under it, and prompts shared by many calls cross over once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_rtp_transport import HOST, port_range, sink

from voip_sos.aio.media_process import ProcessRtpEngine
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.rtcp import RTCP_BYE, RtcpPacket, parse_rtcp

ROOT = Path(__file__).resolve().parents[2]


def tone(seconds: float) -> Prompt:
    n = np.arange(int(seconds * 8000))
    return Prompt.from_pcm((np.sin(2 * np.pi * 440 * n / 8000) * 6000).astype(np.int16))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is as good as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def test_a_dead_media_process_ends_its_calls_and_a_new_one_serves_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = ProcessRtpEngine(ports=port_range(20), host=HOST)
    await engine.start()
    try:
        far = await sink()
        first = engine.open_now()
        first.set_remote(far.addr, codec="PCMA", payload_type=8)
        first.start(tone(1.0))
        await asyncio.wait_for(far.arrived.wait(), 2)
        old_pid = engine.pid
        assert old_pid is not None
        assert engine.alive
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.wait_for(first._closed_fut, 5)  # its call lost its media, and knows it
        assert first.closed and engine.sessions == 0 and not engine.alive
        assert first.local_port not in engine.pool._in_use  # its ports are given back
        assert any("lost their media" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
        deadline = time.monotonic() + 10
        while engine.pid == old_pid or engine._link is None or engine._link.closed:
            assert time.monotonic() < deadline, "no new media process"
            await asyncio.sleep(0.05)
        await asyncio.wait_for(engine._ready, 10)  # type: ignore[arg-type]
        assert engine.alive
        again = await sink()
        second = engine.open_now()
        second.set_remote(again.addr, codec="PCMU", payload_type=0)
        second.start(tone(0.5))
        await asyncio.wait_for(again.arrived.wait(), 2)
        await asyncio.sleep(0.2)
        stats = await second.stats_now()
        assert stats.packets_sent >= 5
        await second.close()
        assert second.stats.packets_sent == len(again.got)  # exact once closed
        assert all(RtpPacket.parse(d).payload_type == 0 for _, d, _ in again.got)
    finally:
        await engine.close()
    assert engine.pid is not None and not alive(engine.pid)


PARENT = """
import asyncio, sys
from voip_sos.aio.media_process import ProcessRtpEngine
from voip_sos.config import PortRange
from voip_sos.rtp.prompt import Prompt
import numpy as np

async def main():
    first = int(sys.argv[1])
    engine = ProcessRtpEngine(ports=PortRange(first, first + 9), host="127.0.0.1")
    await engine.start()
    s = engine.open_now()
    s.set_remote(("127.0.0.1", int(sys.argv[2])), codec="PCMA", payload_type=8,
                 rtcp_addr=("127.0.0.1", int(sys.argv[3])))
    s.start(Prompt.from_pcm(np.zeros(8000, dtype=np.int16)))
    print(engine.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_the_media_process_ends_its_calls_with_rtcp_bye_when_serve_is_killed() -> None:
    rtp, rtcp = await sink(), await sink()
    ports = port_range(5)
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(ports.first), str(rtp.addr[1]), str(rtcp.addr[1]),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    child = 0
    try:
        assert parent.stdout is not None
        child = int(await asyncio.wait_for(parent.stdout.readline(), 30))
        await asyncio.wait_for(rtp.arrived.wait(), 5)
        parent.kill()  # like kill -9 of serve: nothing of it runs any more
        await asyncio.wait_for(parent.wait(), 10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the media process outlived serve"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        last = parse_rtcp(rtcp.got[-1][1])[-1]
        assert isinstance(last, RtcpPacket) and last.packet_type == RTCP_BYE
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


async def test_a_prompt_shared_by_calls_crosses_once_and_is_forgotten_with_the_last() -> None:
    engine = ProcessRtpEngine(ports=port_range(20), host=HOST)
    await engine.start()
    sent: list[str] = []
    assert engine._link is not None
    real_send = engine._link.send
    engine._link.send = lambda msg, socks=(): (sent.append(msg[0]), real_send(msg, socks))[1]  # type: ignore[method-assign]
    try:
        far = await sink()
        message = tone(3.0)  # 48 kB of PCM: two chunks
        calls = [engine.open_now() for _ in range(3)]
        for c in calls:
            c.preload(message)  # with the INVITE
        for c in calls:
            c.set_remote(far.addr, codec="PCMA", payload_type=8)
            c.start(message)
        await asyncio.sleep(0.3)
        assert sent.count("prompt") == 2 and sent.count("forget") == 0  # two chunks, once for three calls
        heard = {RtpPacket.parse(d).ssrc for _, d, _ in far.got}
        assert len(heard) == 3
        await calls[0].close()
        await calls[1].close()
        assert sent.count("forget") == 0
        await calls[2].close()
        assert sent.count("forget") == 1 and not engine._prompts
    finally:
        await engine.close()
