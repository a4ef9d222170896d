"""Call setup benchmark (issue 4): CALLS calls to a SIPp UAS (tests/sipp/uas_bench.xml).

Measures, on the loop clock of this one process:
  invite_ms       `UserAgent.call()` invoked -> its INVITE handed to the socket
  answer_to_rtp   the 200 OK read from the socket -> our first RTP packet arriving at a UDP sink
                  (SIPp's answer SDP points the media at the sink, so the packet really crossed
                  the loopback)

    python -m bench.call_setup [--calls 100] [--concurrency 1]

Last line: one JSON object with calls, invite_ms_p99, answer_to_rtp_ms_p50, answer_to_rtp_ms_p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import Any

import numpy as np

from tests.peers import Sipp, free_port, free_port_pair, wait_udp_listening
from voip_sos.aio.user_agent import UserAgent
from voip_sos.config import Config, HostPort, LogConfig, PortRange, RtpConfig, SipConfig
from voip_sos.rtp import Prompt

TARGET_INVITE_MS_P99 = 5.0
TARGET_ANSWER_TO_RTP_MS_P99 = 10.0


class Sink(asyncio.DatagramProtocol):
    """Timestamps the first RTP packet from each source port (one per call)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.first.setdefault(addr[1], asyncio.get_running_loop().time())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


async def run(calls: int, concurrency: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    sink = Sink()
    sink_transport, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
    sink_port = sink_transport.get_extra_info("sockname")[1]
    sipp_port = free_port()
    rtp = free_port_pair()
    cfg = Config(
        sip=SipConfig(listen=HostPort("127.0.0.1", 0), domain="127.0.0.1", username="bench"),
        rtp=RtpConfig(ports=PortRange(rtp, rtp + 2 * max(concurrency, 1) * 2 + 1)),
        log=LogConfig(level="warning"),
    )
    prompt = Prompt.from_pcm((np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440) * 8000).astype(np.int16))
    invite_ms: list[float] = []
    answer_rtp_ms: list[float] = []
    with Sipp("uas_bench", sipp_port, calls=calls, keys={"sink_port": str(sink_port)}, timeout_s=600) as sipp:
        await wait_udp_listening(sipp_port, peer=sipp)
        ua = UserAgent(cfg)
        await ua.start()
        assert ua.transport is not None and ua.engine is not None
        invite_sent: dict[str, float] = {}
        ok_seen: dict[str, float] = {}

        def trace(direction: str, data: bytes, addr: Any, transport: str) -> None:
            now = loop.time()
            cid = next((ln.split(b":", 1)[1].strip().decode() for ln in data.split(b"\r\n")
                        if ln.lower().startswith(b"call-id:")), "")  # fmt: skip
            if direction == "out" and data.startswith(b"INVITE "):
                invite_sent.setdefault(cid, now)
            elif direction == "in" and data.startswith(b"SIP/2.0 200") and b" INVITE\r\n" in data:
                ok_seen.setdefault(cid, now)

        ua.transport.trace = trace
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                t0 = loop.time()
                call = await ua.call(f"sip:120@127.0.0.1:{sipp_port}", prompt)
                invite_ms.append((invite_sent[call.call_id] - t0) * 1000)
                await asyncio.wait_for(call.answered(), 10)
                port = call.media.local_port
                for _ in range(100):
                    if port in sink.first:
                        break
                    await asyncio.sleep(0.005)
                answer_rtp_ms.append((sink.first[port] - ok_seen[call.call_id]) * 1000)
                sink.first.pop(port, None)
                call.hangup()
                await asyncio.wait_for(call.ended(), 10)

        try:
            await asyncio.gather(*(one() for _ in range(calls)))
        finally:
            await ua.close(timeout_s=2)
            sink_transport.close()
        await sipp.wait_async(30)
    return {
        "calls": calls,
        "invite_ms_p50": round(pct(invite_ms, 50), 3),
        "invite_ms_p99": round(pct(invite_ms, 99), 3),
        "answer_to_rtp_ms_p50": round(pct(answer_rtp_ms, 50), 3),
        "answer_to_rtp_ms_p99": round(pct(answer_rtp_ms, 99), 3),
        "answer_to_rtp_ms_mean": round(statistics.fmean(answer_rtp_ms), 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args(argv)
    res = asyncio.run(run(args.calls, args.concurrency))
    print(f"{'metric':<24}{'value':>10}  target")
    print(f"{'calls':<24}{res['calls']:>10}")
    print(f"{'invite ms p50':<24}{res['invite_ms_p50']:>10.3f}")
    print(f"{'invite ms p99':<24}{res['invite_ms_p99']:>10.3f}  <= {TARGET_INVITE_MS_P99}")
    print(f"{'answer->rtp ms p50':<24}{res['answer_to_rtp_ms_p50']:>10.3f}")
    print(f"{'answer->rtp ms p99':<24}{res['answer_to_rtp_ms_p99']:>10.3f}  <= {TARGET_ANSWER_TO_RTP_MS_P99}")
    print(
        json.dumps(
            {k: res[k] for k in ("calls", "invite_ms_p99", "answer_to_rtp_ms_p50", "answer_to_rtp_ms_p99")}
        )
    )
    ok = (
        res["invite_ms_p99"] <= TARGET_INVITE_MS_P99
        and res["answer_to_rtp_ms_p99"] <= TARGET_ANSWER_TO_RTP_MS_P99
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
