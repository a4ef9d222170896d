"""Two (or more) sans-IO SIP agents wired together with a fake clock: `transfer()` moves what one
core wants to send into the core at the destination address; nothing touches a socket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voip_sos.sip import AgentConfig, Event, SipAgent, TimerConfig
from voip_sos.sip.agent import Outgoing
from voip_sos.sip.message import Message, parse_datagram

TIMERS = TimerConfig(t1=0.5, t2=4.0, t4=5.0)


def make_agent(user: str, port: int, **kw: object) -> SipAgent:
    cfg = AgentConfig(
        user=user, domain="127.0.0.1", local_host="127.0.0.1", local_port=port, timers=TIMERS, **kw
    )  # type: ignore[arg-type]
    return SipAgent(cfg)


@dataclass
class Wire:
    """Every message that crossed, in order, as (time, source port, destination port, message)."""

    log: list[tuple[float, int, int, Message, Outgoing]] = field(default_factory=list)

    def methods(self) -> list[str]:
        out = []
        for _, _, _, m, _ in self.log:
            out.append(getattr(m, "method", "") or str(getattr(m, "status", "")))
        return out


def transfer(
    agents: list[SipAgent],
    now: float,
    wire: Wire | None = None,
    drop: Callable[[Message, Outgoing], bool] | None = None,
    rounds: int = 20,
) -> None:
    """Deliver until nobody has anything to send (bounded), applying `drop` to simulate loss."""
    by_port = {a.config.local_port: a for a in agents}
    for _ in range(rounds):
        moved = False
        for src in agents:
            for out in src.datagrams_to_send(now):
                moved = True
                msg = parse_datagram(out.data)
                if wire is not None:
                    wire.log.append((now, src.config.local_port, out.addr[1], msg, out))
                if drop is not None and drop(msg, out):
                    continue
                dst = by_port.get(out.addr[1])
                if dst is not None:
                    dst.receive_datagram(out.data, ("127.0.0.1", src.config.local_port), now, out.transport)
        if not moved:
            return
    raise AssertionError("transfer did not settle")


def events(agent: SipAgent) -> list[Event]:
    out = []
    while (e := agent.next_event()) is not None:
        out.append(e)
    return out


def run_timers(
    agents: list[SipAgent],
    start: float,
    until: float,
    wire: Wire | None = None,
    drop: Callable[[Message, Outgoing], bool] | None = None,
) -> float:
    """Step the fake clock from timer to timer, from `start` up to `until`; returns `until`."""
    now = start
    for _ in range(10_000):
        due = [t for a in agents if (t := a.get_timer()) is not None]
        if not due or min(due) > until:
            return until
        now = min(due)
        for a in agents:
            t = a.get_timer()
            if t is not None and t <= now:
                a.handle_timer(now)
        transfer(agents, now, wire, drop)
    raise AssertionError("timers did not settle")
