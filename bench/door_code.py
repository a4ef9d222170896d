"""Door code benchmark: key press -> temporary door code, 100 presses (issue 8).

A Zigbee2MQTT lock simulator answers at once over a real Mosquitto broker (a private one started on
a free loopback port, or `--broker 127.0.0.1:PORT`); the
hub runs in this process with its real UDP socket, lock adapter, state file and backend link; the
STB side is the real HubClient over loopback. Each press is an INSTRUCTION; it is timed until the
confirmed door code is back at the STB (the moment the STB can send it on as an UPDATE) and, as a
second figure, until the hub's `door_code` event reaches a backend link client on the broker.
Between presses the codes are revoked (untimed), so every press costs a real lock round trip
instead of being handed the still-valid code again.

    python -m bench.door_code [--presses 100] [--broker 127.0.0.1:1883]

Last line: one JSON object with presses, codes, press_to_code_ms_p50, press_to_code_ms_p99
(and press_to_hub_event_ms_p50/p99). Target: every press gets a code, p99 <= 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from pathlib import Path

from tests.hub import hub_support
from tests.hub.broker import mosquitto
from tests.hub.hub_sims import Z2mLockSim
from tests.hub.hub_support import STB_KEY, backend, next_event, running_hub, write_config
from voip_sos.hub.aio import open_hub_client
from voip_sos.hub.link import HubLink
from voip_sos.hub.wire import PartState

TARGET_P99_MS = 500.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def code_recorded_on_incident(link: HubLink, hub_id: str, code: str, pressed_at: float) -> float | None:
    """HOOK for the lead: ms from the press until `code` is recorded on the backend's incident.

    Today there is no incident runner on this branch, so this returns None and the benchmark reports
    press -> code at the STB (and press -> the hub's event at a backend link client). Once the
    incidents runner consumes hub events, wait here for the incident's log entry carrying `code`
    (or the hub event the runner stored) and return the elapsed time.
    """
    return None


async def run(presses: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp), hub={"deadline_s": 5}, lock={"attempt_timeout_s": 2})
        lock = Z2mLockSim(cfg.lock.base_topic, cfg.lock.device)
        async with lock, backend() as link, running_hub(cfg) as hub:
            assert hub.endpoint is not None
            stb = await open_hub_client(STB_KEY, hub.endpoint.local_addr, give_up_s=10)
            to_stb: list[float] = []
            to_event: list[float] = []
            to_incident: list[float] = []
            codes = 0
            try:
                loop = asyncio.get_running_loop()
                for _ in range(presses):
                    t0 = loop.time()
                    got = await stb.request_codes()
                    t1 = loop.time()
                    if got is None or got.door_state is not PartState.ISSUED or got.door_code is None:
                        continue
                    codes += 1
                    to_stb.append((t1 - t0) * 1000)
                    event = await next_event(link, hub.hub_id, "door_code", timeout_s=5)
                    assert event.data["code"] == got.door_code
                    to_event.append((event.received_at - t0) * 1000)
                    recorded = await code_recorded_on_incident(link, hub.hub_id, got.door_code, t0)
                    if recorded is not None:
                        to_incident.append(recorded)
                    revoked = await stb.revoke()
                    assert revoked is not None and revoked.cleared == 1
            finally:
                stb.close()
    return {
        "presses": presses,
        "codes": codes,
        "press_to_code_ms_p50": round(percentile(to_stb, 0.50), 2),
        "press_to_code_ms_p99": round(percentile(to_stb, 0.99), 2),
        "press_to_hub_event_ms_p50": round(percentile(to_event, 0.50), 2),
        "press_to_hub_event_ms_p99": round(percentile(to_event, 0.99), 2),
        "measured_to": "incident" if to_incident else "stb",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument(
        "--broker", metavar="127.0.0.1:PORT", help="use this running broker instead of a private Mosquitto"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.broker:
        hub_support.use_broker(int(args.broker.rsplit(":", 1)[1]))
        result = asyncio.run(run(args.presses))
    else:
        with mosquitto() as port:
            hub_support.use_broker(port)
            result = asyncio.run(run(args.presses))
    ok = result["codes"] == result["presses"] and float(str(result["press_to_code_ms_p99"])) <= TARGET_P99_MS
    print(f"{'figure':<28}{'value':>12}{'target':>12}")
    print(f"{'presses':<28}{result['presses']:>12}{'':>12}")
    print(f"{'codes':<28}{result['codes']:>12}{result['presses']:>12}")
    print(f"{'press->code at STB p50 ms':<28}{result['press_to_code_ms_p50']:>12}{'':>12}")
    print(f"{'press->code at STB p99 ms':<28}{result['press_to_code_ms_p99']:>12}{TARGET_P99_MS:>12}")
    print(f"{'press->hub event p50 ms':<28}{result['press_to_hub_event_ms_p50']:>12}{'':>12}")
    print(f"{'press->hub event p99 ms':<28}{result['press_to_hub_event_ms_p99']:>12}{'':>12}")
    print(f"{'targets met':<28}{'yes' if ok else 'NO':>12}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
