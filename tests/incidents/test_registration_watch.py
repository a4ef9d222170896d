"""The PBX registration watch: one ERROR when registration has been lost for more than a minute,
once per outage, and the gauge and /healthz that follow it (on a fake clock)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest

from voip_sos.aio.user_agent import RegistrationResult
from voip_sos.config import load_config
from voip_sos.metrics import Metrics
from voip_sos.service import _Watch

REGISTERED = RegistrationResult("registered", 200, "OK", 300)
FAILED = RegistrationResult("failed", 403, "Forbidden", None)


def registered_gauge(metrics: Metrics) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("voip_sos_pbx_registered "):
            return float(line.split()[-1])
    raise AssertionError("no voip_sos_pbx_registered")


def lost_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and "registration lost" in r.getMessage()]


async def test_registration_lost_over_a_minute_is_one_error_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("sip:\n  registrar: 127.0.0.1:5060\n  domain: 127.0.0.1\n", encoding="utf-8")
    cfg = load_config(cfg_file, environ={})
    now = [1000.0]
    ua: Any = SimpleNamespace(registration=REGISTERED, engine=None)  # media on the caller's loop
    prompts: Any = SimpleNamespace(queue_length=lambda: 0)
    metrics = Metrics()
    watch = _Watch(cfg, ua, metrics, prompts, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="voip_sos.service")

    async def at(t: float) -> None:
        now[0] = 1000.0 + t
        await watch.tick()

    await at(0)
    assert registered_gauge(metrics) == 1 and (await watch.health())["status"] == "ok"
    ua.registration = FAILED
    await at(5)  # the outage starts being counted here
    assert registered_gauge(metrics) == 0
    health = await watch.health()
    assert health["status"] == "degraded" and health["registration"] == "failed"
    for t in (10, 35, 64.9):
        await at(t)
    assert not lost_errors(caplog)  # under a minute: the gauge says it, the log does not shout yet
    await at(65.1)
    errors = lost_errors(caplog)
    assert len(errors) == 1 and errors[0].state == "failed" and errors[0].status == 403  # type: ignore[attr-defined]
    for t in (70, 200, 3600):
        await at(t)
    assert len(lost_errors(caplog)) == 1  # once per outage, not once per tick

    ua.registration = REGISTERED
    await at(3605)
    assert registered_gauge(metrics) == 1
    assert any(r.getMessage() == "PBX registration restored" for r in caplog.records)
    ua.registration = FAILED  # a new outage: counted from its own start
    await at(3610)
    await at(3660)
    assert len(lost_errors(caplog)) == 1
    await at(3671)
    assert len(lost_errors(caplog)) == 2
