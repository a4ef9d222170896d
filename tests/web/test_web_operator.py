"""`/healthz` and `/metrics` on the link server's address and on a separate operator address, and the
Metrics counters as Prometheus sees them (text exposition parsed back)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voip_sos.config import HostPort, HttpConfig
from voip_sos.directory.schema import create_engine, upgrade
from voip_sos.metrics import CALL_RESULTS, INCIDENT_OUTCOMES, SMS_RESULTS, Metrics
from voip_sos.sos.listener import DROP_REASONS
from voip_sos.web import DbLinkStore, Link, start_http
from voip_sos.web.server import HealthCheck

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DbLinkStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'links.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield DbLinkStore(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def base(where: HostPort) -> str:
    return f"http://{where.host}:{where.port}"


def cfg(*, separate: bool) -> HttpConfig:
    return HttpConfig(
        listen=HostPort("127.0.0.1", 0), metrics_listen=HostPort("127.0.0.1", 0) if separate else None
    )


async def scrape(http: aiohttp.ClientSession, where: HostPort) -> Samples:
    async with http.get(base(where) + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        body = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"voip_sos_{name}", tuple(sorted(labels.items())))]


async def test_healthz_and_metrics_on_the_public_address(
    store: DbLinkStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    servers = await start_http(cfg(separate=False), store, metrics.registry, health=None)
    try:
        assert servers.operator is None and servers.public.port != 0
        async with http.get(base(servers.public) + "/healthz") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.json() == {"status": "ok"}
        samples = await scrape(http, servers.public)
        assert value(samples, "incidents_open") == 0
    finally:
        await servers.close()


async def test_separate_operator_address_takes_healthz_and_metrics_away_from_public(
    store: DbLinkStore, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF....WAVE")
    token = await store.create(Link("1", "voice", str(wav), datetime.now(UTC) + timedelta(hours=1)))

    since = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)

    async def health() -> dict[str, object]:
        return {"status": "ok", "pbx_registered": True, "incidents_open": 0, "registered_since": since}

    servers = await start_http(cfg(separate=True), store, Metrics().registry, health)
    try:
        assert servers.operator is not None and servers.operator.port not in (0, servers.public.port)
        for path in ("/metrics", "/healthz"):
            async with http.get(base(servers.public) + path) as resp:
                assert resp.status == 404, path
        async with http.get(base(servers.public) + f"/v/{token}") as resp:
            assert resp.status == 200 and await resp.read() == wav.read_bytes()
        async with http.get(base(servers.operator) + "/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "status": "ok",
                "pbx_registered": True,
                "incidents_open": 0,
                "registered_since": "2026-11-24 19:00:00+00:00",
            }
        assert value(await scrape(http, servers.operator), "pbx_registered") == 0
        for path in (f"/v/{token}", "/", "/nothing"):  # the operator address serves no links
            async with http.get(base(servers.operator) + path) as resp:
                assert resp.status == 404, path
                assert "Server" not in resp.headers
    finally:
        await servers.close()


async def test_unhealthy_or_failing_health_check_answers_503(
    store: DbLinkStore, http: aiohttp.ClientSession
) -> None:
    state: dict[str, object] = {"status": "ok"}

    async def health() -> dict[str, object]:
        if state.get("raise"):
            raise RuntimeError("database gone")
        return dict(state)

    checks: HealthCheck = health
    servers = await start_http(cfg(separate=True), store, None, checks)
    try:
        assert servers.operator is not None
        url = base(servers.operator) + "/healthz"
        async with http.get(url) as resp:
            assert resp.status == 200
        state.update(status="degraded", pbx_registered=False)
        async with http.get(url) as resp:
            assert resp.status == 503
            assert await resp.json() == {"status": "degraded", "pbx_registered": False}
        state["raise"] = True
        async with http.get(url) as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "error"
        async with http.get(base(servers.operator) + "/metrics") as resp:
            assert resp.status == 404  # no registry given
    finally:
        await servers.close()


async def test_metric_values_move_with_the_metrics_calls(
    store: DbLinkStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    servers = await start_http(cfg(separate=True), store, metrics.registry, health=None)
    assert servers.operator is not None
    try:
        before = await scrape(http, servers.operator)
        # Every known label value is there at zero before anything happens.
        for outcome in INCIDENT_OUTCOMES:
            assert value(before, "incidents_closed_total", outcome=outcome) == 0
        for result in CALL_RESULTS:
            assert value(before, "calls_total", result=result) == 0
        for result in SMS_RESULTS:
            assert value(before, "sms_total", result=result) == 0
        for reason in DROP_REASONS:
            assert value(before, "sos_rejected_total", reason=reason) == 0

        for _ in range(3):
            metrics.incident_opened()
        metrics.incident_closed("reached")
        metrics.incident_closed("false_alarm")
        for result in ("busy", "busy", "confirmed", "no_answer", "unconfirmed", "cancelled", "failed"):
            metrics.call_ended(result)
        metrics.sms_sent("accepted")
        metrics.sms_sent("accepted")
        metrics.sms_sent("failed")
        metrics.registration(True)
        metrics.render_queue(4)
        metrics.sos_rejected("bad_mac")
        metrics.sos_rejected("rate_limited", 25)
        metrics.call_ended("Weird Value!")  # a bug's label is folded into "other"

        after = await scrape(http, servers.operator)
        assert value(after, "incidents_open") == 1
        assert value(after, "incidents_opened_total") == 3
        assert value(after, "incidents_closed_total", outcome="reached") == 1
        assert value(after, "incidents_closed_total", outcome="false_alarm") == 1
        assert value(after, "incidents_closed_total", outcome="unreached") == 0
        assert value(after, "calls_total", result="busy") == 2
        for result in ("confirmed", "no_answer", "unconfirmed", "cancelled", "failed", "other"):
            assert value(after, "calls_total", result=result) == 1, result
        assert value(after, "sms_total", result="accepted") == 2
        assert value(after, "sms_total", result="failed") == 1
        assert value(after, "pbx_registered") == 1
        assert value(after, "render_queue_length") == 4
        assert value(after, "sos_rejected_total", reason="bad_mac") == 1
        assert value(after, "sos_rejected_total", reason="rate_limited") == 25

        metrics.registration(False)
        metrics.render_queue(0)
        metrics.incident_closed("unreached")
        metrics.incident_closed("unreached")  # more closes than opens: the gauge stays at zero
        last = await scrape(http, servers.operator)
        assert value(last, "pbx_registered") == 0
        assert value(last, "render_queue_length") == 0
        assert value(last, "incidents_open") == 0
        assert value(last, "incidents_closed_total", outcome="unreached") == 2
    finally:
        await servers.close()


async def test_sync_sos_rejected_adds_only_the_growth_of_the_listener_totals() -> None:
    metrics = Metrics()
    metrics.sync_sos_rejected({"malformed": 3, "clock": 0})
    metrics.sync_sos_rejected({"malformed": 5, "clock": 1})
    metrics.sync_sos_rejected({"malformed": 5, "clock": 1})
    assert metrics.registry.get_sample_value("voip_sos_sos_rejected_total", {"reason": "malformed"}) == 5
    assert metrics.registry.get_sample_value("voip_sos_sos_rejected_total", {"reason": "clock"}) == 1


async def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.call_ended("busy")
    assert a.registry.get_sample_value("voip_sos_calls_total", {"result": "busy"}) == 1
    assert b.registry.get_sample_value("voip_sos_calls_total", {"result": "busy"}) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_address_in_use_fails_and_leaves_nothing_listening(store: DbLinkStore) -> None:
    public = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = HttpConfig(
            listen=HostPort("127.0.0.1", public), metrics_listen=HostPort("127.0.0.1", taken.getsockname()[1])
        )
        with pytest.raises(OSError):
            await start_http(config, store, Metrics().registry, None)
    # The public site had started; it was closed again, so nothing accepts on its port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        assert probe.connect_ex(("127.0.0.1", public)) != 0
    servers = await start_http(HttpConfig(listen=HostPort("127.0.0.1", public)), store, None, None)
    try:
        assert servers.public == HostPort("127.0.0.1", public)
    finally:
        await servers.close()
