"""`voip-sos sip register --check`, `call test` and `sms test` as processes against SIPp."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.peers import Sipp, free_port, free_port_pair, wait_udp_listening

pytestmark = pytest.mark.peers


def _env(tmp: Path, registrar: int | None, expires: int = 600) -> dict[str, str]:
    rtp = free_port_pair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_SOS_")}
    env.update(
        VOIP_SOS_CONFIG=str(tmp / "none.yaml"),
        VOIP_SOS_SIP_LISTEN=f"127.0.0.1:{free_port()}",
        VOIP_SOS_SIP_DOMAIN="127.0.0.1",
        VOIP_SOS_SIP_USERNAME="voip-sos",
        VOIP_SOS_SIP_PASSWORD="s3cret",
        VOIP_SOS_SIP_EXPIRES_S=str(expires),
        VOIP_SOS_RTP_PORTS=f"{rtp}-{rtp + 9}",
    )
    if registrar:
        env["VOIP_SOS_SIP_REGISTRAR"] = f"127.0.0.1:{registrar}"
    (tmp / "none.yaml").write_text("{}\n")
    return env


async def _run(args: list[str], env: dict[str, str], timeout_s: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voip_sos", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_register_check(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_register", port, keys={"username": "voip-sos", "password": "s3cret"}) as sipp:
        await wait_udp_listening(port, peer=sipp)
        rc, out = await _run(["sip", "register", "--check"], _env(tmp_path, port, expires=60))
        assert rc == 0, out
        assert re.search(r"ms  registration registered: 200 OK, expires 300 s", out), out
        assert "-> 127.0.0.1:" in out and "REGISTER sip:127.0.0.1 SIP/2.0" in out
        assert await sipp.wait_async(5) == 0


async def test_register_check_fails_cleanly_on_wrong_password(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_register", port, keys={"username": "voip-sos", "password": "other"}):
        await asyncio.sleep(0.2)
        rc, out = await _run(["sip", "register", "--check"], _env(tmp_path, port, expires=60))
        assert rc == 1, out
        assert "registration failed: 403 Forbidden" in out


async def test_call_test_answered(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_answer_bye", port) as sipp:
        await wait_udp_listening(port, peer=sipp)
        rc, out = await _run(
            ["call", "test", "--to", f"sip:120@127.0.0.1:{port}", "--seconds", "5"], _env(tmp_path, None)
        )
        assert rc == 0, out
        assert "answered: PCMA/8000 pt 8" in out
        assert "ended by remote: 200" in out
        m = re.search(r"rtp: (\d+) packets sent", out)
        assert m and int(m.group(1)) > 50, out


async def test_call_test_busy_exits_1(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_busy", port) as sipp:
        await wait_udp_listening(port, peer=sipp)
        rc, out = await _run(["call", "test", "--to", f"sip:120@127.0.0.1:{port}"], _env(tmp_path, None))
        assert rc == 1 and "ended by remote: 486 Busy Here" in out


async def test_sms_test(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_message_401", port, keys={"username": "voip-sos", "password": "s3cret"}) as sipp:
        await wait_udp_listening(port, peer=sipp)
        rc, out = await _run(
            ["sms", "test", "--to", f"sip:120@127.0.0.1:{port}", "--text", "test"], _env(tmp_path, None)
        )
        assert rc == 0, out
        assert "MESSAGE final status: 202" in out


async def test_call_test_with_text_rendered_by_piper(tmp_path: Path) -> None:
    port = free_port()
    with Sipp("uas_answer_bye", port) as sipp:
        await wait_udp_listening(port, peer=sipp)
        args = ["call", "test", "--to", f"sip:120@127.0.0.1:{port}", "--text", "This is a test call."]
        rc, out = await _run(args, _env(tmp_path, None), timeout_s=60)
        assert rc == 0, out
        assert "answered: PCMA/8000" in out and "ended by remote: 200" in out
