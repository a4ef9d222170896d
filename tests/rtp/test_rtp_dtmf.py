"""RFC 4733 telephone-events received: one DtmfReceived per press, whatever the network repeats."""

from __future__ import annotations

import random

import pytest

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.rtp.dtmf import TelephoneEventReceiver, digit_to_event, event_payload, event_to_digit
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.sender import RtpSender

SSRC = 0x1234


def ev(
    ts: int, code: int, duration: int, *, end: bool = False, marker: bool = False, seq: int = 0
) -> RtpPacket:
    return RtpPacket(101, seq, ts, SSRC, event_payload(code, duration, end=end), marker=marker)


def press(ts: int, code: int, updates: int = 5, seq0: int = 0) -> list[RtpPacket]:
    """A press as RFC 4733 §2.5 sends it: marker first, growing durations, the end three times."""
    out = [ev(ts, code, 160 * (i + 1), marker=i == 0, seq=seq0 + i) for i in range(updates)]
    out += [ev(ts, code, 160 * updates, end=True, seq=seq0 + updates + i) for i in range(3)]
    return out


def digits(packets: list[RtpPacket]) -> str:
    rx = TelephoneEventReceiver()
    keys = [rx.receive(p, float(i)) for i, p in enumerate(packets)]
    return "".join(k.digit for k in keys if k is not None)


def test_one_event_per_press_with_end_retransmissions() -> None:
    assert digits(press(1000, 1)) == "1"
    assert digits(press(1000, 1) + press(5000, 9, seq0=8)) == "19"
    # The same key pressed twice is two presses (new timestamp).
    assert digits(press(1000, 5) + press(3000, 5, seq0=8)) == "55"


def test_event_reported_on_first_packet_with_time_and_source() -> None:
    rx = TelephoneEventReceiver()
    key = rx.receive(ev(1000, 11, 160, marker=True), 42.5)
    assert key is not None and (key.digit, key.source, key.at) == ("#", "rfc4733", 42.5)


def test_loss_duplicates_and_reordering_are_folded() -> None:
    packets = press(1000, 3)
    assert digits(packets[1:]) == "3"  # marker packet lost
    assert digits(packets[-3:]) == "3"  # only the end packets arrived
    assert digits(packets + packets) == "3"  # everything duplicated
    shuffled = packets[:]
    random.Random(3).shuffle(shuffled)
    assert digits(shuffled) == "3"
    # A late end retransmission of the first press after the second press started.
    first, second = press(1000, 1), press(2000, 2, seq0=8)
    assert digits(first[:5] + second[:2] + first[5:] + second[2:]) == "12"


def test_same_key_again_after_lost_end_and_lost_marker_is_a_new_press() -> None:
    first = press(1000, 7)[:4]  # its end never arrived
    second = press(4000, 7, seq0=8)[1:]  # and this one's marker was lost
    assert digits(first + second) == "77"


def test_long_event_segments_are_one_press() -> None:
    # RFC 4733 §2.5.1.3: a press longer than 65535 samples goes on in a segment with a new timestamp.
    segment1 = [ev(1000, 0, d, marker=d == 160) for d in range(160, 0xFFFF, 160 * 40)] + [ev(1000, 0, 0xFFFF)]
    segment2 = [ev(1000 + 0xFFFF, 0, d) for d in (160, 320)] + [ev(1000 + 0xFFFF, 0, 320, end=True)]
    assert digits(segment1 + segment2) == "0"


def test_non_dtmf_events_and_short_payloads() -> None:
    assert digits([ev(1000, 16, 160, marker=True)]) == ""  # flash
    with pytest.raises(RemoteProtocolError, match="telephone-event payload shorter than 4 octets"):
        TelephoneEventReceiver().receive(RtpPacket(101, 0, 0, 0, b"\x01\x00"), 0.0)


def test_codes_and_payload_limits() -> None:
    assert [digit_to_event(d) for d in "0159*#ad"] == [0, 1, 5, 9, 10, 11, 12, 15]
    assert event_to_digit(10) == "*" and event_to_digit(16) is None
    assert event_payload(1, 800, end=True, volume=10) == bytes([1, 0x8A, 0x03, 0x20])
    with pytest.raises(LocalProtocolError):
        event_payload(1, 0x10000, end=False)
    with pytest.raises(LocalProtocolError):
        digit_to_event("12")


def test_our_sender_to_our_receiver() -> None:
    s = RtpSender(codec="PCMU", payload_type=0, telephone_event_pt=101, rng=random.Random(1))
    s.start(0.0, Prompt.from_pcm(bytes(3200)))
    for d in "19#":
        s.send_dtmf(d)
    rx = TelephoneEventReceiver()
    heard = []
    for n in range(60):
        for wire in s.packets_due(n * 0.02):
            p = RtpPacket.parse(wire)
            if p.payload_type == 101:
                key = rx.receive(p, n * 0.02)
                if key:
                    heard.append(key.digit)
    assert "".join(heard) == "19#"
