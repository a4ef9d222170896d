"""The prompt sender on a fake clock: schedule, wraparound, marker, gaps, prompt swaps, catch-up, DTMF."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from voip_sos.errors import LocalProtocolError, MediaError
from voip_sos.rtp import g711
from voip_sos.rtp.events import PromptPlayed
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.sender import FRAME_SECONDS, MAX_BURST_FRAMES, RtpSender

T0 = 1000.0


def ramp_prompt(frames: float, offset: int = 0) -> Prompt:
    """A prompt whose every frame is recognisable: frame i holds i + 1 + offset (in steps of 16,
    values that A-law and small μ-law codes hold exactly)."""
    n = round(frames * 160)
    pcm = (16 * (np.arange(n) // 160 + 1 + offset) + 8).astype(np.int16)
    return Prompt.from_pcm(pcm)


def sender(**kw: object) -> RtpSender:
    args: dict[str, object] = {
        "codec": "PCMA",
        "payload_type": 8,
        "telephone_event_pt": 101,
        "rng": random.Random(7),
    }
    args.update(kw)
    return RtpSender(**args)  # type: ignore[arg-type]


def run(s: RtpSender, slots: int) -> list[RtpPacket]:
    """Step the fake clock exactly to each due time, like the adapter's timer does."""
    out = []
    for _ in range(slots):
        due = s.next_due()
        assert due is not None
        out += [RtpPacket.parse(p) for p in s.packets_due(due)]
    return out


def frame_values(packets: list[RtpPacket]) -> list[int]:
    """The frame number each audio packet carries (0 = silence)."""
    return [
        (int(g711.decode("PCMA", p.payload)[0]) - 8) // 16 if p.payload_type == 8 else -1 for p in packets
    ]


def test_random_start_values_and_marker_on_first_packet_only() -> None:
    a, b = sender(rng=random.Random(1)), sender(rng=random.Random(2))
    assert (a.ssrc, a._seq, a._ts0) != (b.ssrc, b._seq, b._ts0)
    a.start(T0, ramp_prompt(3))
    packets = run(a, 10)
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert {p.ssrc for p in packets} == {a.ssrc}
    # Default randomness is the system's: two default senders differ.
    assert RtpSender(codec="PCMU", payload_type=0).ssrc != RtpSender(codec="PCMU", payload_type=0).ssrc


def test_absolute_schedule_never_drifts() -> None:
    s = sender()
    assert s.next_due() is None and s.packets_due(T0) == []
    s.start(T0, ramp_prompt(2))
    assert s.next_due() == T0
    assert s.packets_due(T0 - 0.005) == []  # an early wakeup sends nothing
    # A late wakeup sends what is due and the next due time stays on the grid: start + n * 20 ms.
    assert len(s.packets_due(T0 + 0.0131)) == 1
    assert s.next_due() == pytest.approx(T0 + FRAME_SECONDS)
    assert len(s.packets_due(T0 + 0.0199)) == 0
    assert len(s.packets_due(T0 + 0.0655)) == 3
    assert s.next_due() == pytest.approx(T0 + 4 * FRAME_SECONDS)
    for n in range(4, 50_000, 997):  # far into the call the grid is still exact
        assert s.next_due() is not None
        s.packets_due(T0 + n * FRAME_SECONDS)
        assert s.next_due() == pytest.approx(T0 + (n + 1) * FRAME_SECONDS, abs=1e-9)


def test_sequence_and_timestamp_wrap_around() -> None:
    s = sender()
    s._seq, s._ts0 = 0xFFFE, 0xFFFFFFFF - 160
    s.start(T0, ramp_prompt(1))
    packets = run(s, 4)
    assert [p.sequence_number for p in packets] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 160, 0xFFFFFFFF, 159, 319]


def test_loop_with_gap_keeps_one_continuous_stream() -> None:
    s = sender()
    s.start(T0, ramp_prompt(3), loop=True, gap_s=0.04)
    packets = run(s, 12)
    assert frame_values(packets) == [1, 2, 3, 0, 0, 1, 2, 3, 0, 0, 1, 2]
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = [p.timestamp for p in packets]
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(stamps))
    assert [p.marker for p in packets].count(True) == 1
    assert s.next_event() == PromptPlayed(1, T0 + 2 * FRAME_SECONDS)
    assert s.next_event() == PromptPlayed(2, T0 + 7 * FRAME_SECONDS)
    assert s.next_event() is None


def test_non_looping_prompt_ends_in_silence_that_keeps_flowing() -> None:
    s = sender()
    s.start(T0, ramp_prompt(2), loop=False)
    packets = run(s, 6)
    assert frame_values(packets) == [1, 2, 0, 0, 0, 0]
    assert s.finished and s.repetitions == 1


def test_last_frame_is_padded_with_silence() -> None:
    prompt = ramp_prompt(1.5)
    frames = prompt.frames("PCMA")
    assert len(frames) == 2 and all(len(f) == 160 for f in frames)
    assert frames[1][80:] == b"\xd5" * 80
    assert prompt.frames("PCMA") is frames  # encoded once, shared by every call
    assert prompt.frames("PCMU")[1][80:] == b"\xff" * 80


def test_replace_and_restart_continue_the_same_stream() -> None:
    s = sender()
    s.start(T0, ramp_prompt(4), loop=True)
    first = run(s, 3)
    s.restart()  # key 9: from the top
    second = run(s, 2)
    s.play(ramp_prompt(2, offset=6), loop=False)  # "confirmed, thank you"
    third = run(s, 4)
    assert frame_values(first + second + third) == [1, 2, 3, 1, 2, 7, 8, 0, 0]
    packets = first + second + third
    assert len({p.ssrc for p in packets}) == 1
    assert [p.sequence_number - packets[0].sequence_number for p in packets] == list(range(9))
    assert [p.marker for p in packets].count(True) == 1
    s.silence()
    assert frame_values(run(s, 2)) == [0, 0]


def test_stall_is_caught_up_with_a_bounded_burst_and_no_lost_words() -> None:
    s = sender()
    s.start(T0, ramp_prompt(20), loop=False)
    run(s, 2)
    # The loop stalls for 200 ms: 10 slots are due at once.
    burst = [RtpPacket.parse(p) for p in s.packets_due(T0 + 11 * FRAME_SECONDS)]
    assert len(burst) == MAX_BURST_FRAMES
    assert s.slots_skipped == 10 - MAX_BURST_FRAMES
    # Sequence numbers stay continuous, timestamps jump over the skipped slots, the marker resyncs.
    assert burst[0].marker and not any(p.marker for p in burst[1:])
    assert frame_values(burst) == [3, 4, 5, 6, 7]
    assert s.next_due() == pytest.approx(T0 + 12 * FRAME_SECONDS)


def test_codec_change_keeps_position() -> None:
    s = sender()
    s.start(T0, ramp_prompt(4))
    run(s, 2)
    s.set_codec("PCMU", 0, None)
    packets = run(s, 2)
    assert [p.payload_type for p in packets] == [0, 0]
    assert [(int(g711.decode("PCMU", p.payload)[0]) - 8) // 16 for p in packets] == [3, 4]
    with pytest.raises(LocalProtocolError, match="telephone-event was not negotiated"):
        s.send_dtmf("1")


def test_dtmf_replaces_audio_then_audio_resumes() -> None:
    s = sender()
    s.start(T0, ramp_prompt(10), loop=False)
    run(s, 2)
    s.send_dtmf("#", duration_ms=60)
    packets = run(s, 9)
    events = [p for p in packets if p.payload_type == 101]
    assert len(events) == 3 + 2  # three 20 ms updates, the end repeated three times in all
    assert {p.timestamp for p in events} == {packets[0].timestamp}
    assert [p.marker for p in events] == [True, False, False, False, False]
    durations = [int.from_bytes(p.payload[2:4], "big") for p in events]
    assert durations == [160, 320, 480, 480, 480]
    assert [bool(p.payload[1] & 0x80) for p in events] == [False, False, True, True, True]
    assert {p.payload[0] for p in events} == {11}
    # The prompt paused during the key and resumes where it stood.
    assert frame_values(packets[5:]) == [3, 4, 5, 6]
    with pytest.raises(LocalProtocolError, match="not a DTMF key"):
        s.send_dtmf("x")


def test_start_twice_and_bad_prompts_are_refused(tmp_path: object) -> None:
    s = sender()
    s.start(T0)
    with pytest.raises(LocalProtocolError):
        s.start(T0)
    with pytest.raises(LocalProtocolError):
        s.play(ramp_prompt(1), gap_s=-1)
    with pytest.raises(MediaError, match="prompt is empty"):
        Prompt.from_pcm(b"")
    with pytest.raises(MediaError, match="8000 Hz"):
        Prompt.from_pcm(np.zeros(10, np.int16), sample_rate=16000)


def test_pause_for_hold_keeps_the_clock_and_the_sequence() -> None:
    s = sender()
    s.start(T0, ramp_prompt(10), loop=False)
    before = run(s, 2)
    s.pause(True)
    assert s.packets_due(T0 + 0.5) == []
    s.pause(False)
    after = run(s, 2)
    assert [p.sequence_number - before[0].sequence_number for p in before + after] == [0, 1, 2, 3]
    # Timestamps follow the clock across the hold: slot 26 is 0.52 s after the start.
    assert (after[0].timestamp - before[0].timestamp) & 0xFFFFFFFF == 26 * 160
    assert after[0].marker and not after[1].marker
    assert frame_values(after) == [3, 4]  # the prompt waited
