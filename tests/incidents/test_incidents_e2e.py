"""Incidents end to end: the real `voip-sos serve` with Kamailio as the PBX, baresip phones that
record what they hear and press keys, SIPp for scripted callees (busy, no answer, answered without
a key) and as the operator's SMS centre; the SOS key pressed with the real STB CLI."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.incidents.harness import (
    PHONE_PASSWORD,
    SIP_PASSWORD,
    Backend,
    Press,
    baresip_port,
    incident_of,
    read_wav,
    recordings,
    register_sipp,
    repetitions,
    secret_hex,
    stb_ip,
    subscriber,
    wait_for,
)
from tests.peers import Baresip, Kamailio, Sipp, free_port, wait_udp_listening
from voip_sos.sip.pidf import parse_pidf_lo
from voip_sos.sos.wire import MsgType
from voip_sos.stb.aio import open_stb_client
from voip_sos.stb.events import ReceiptReceived

CENTRE, BACKUP, TEST_NUMBER = "120", "121", "9999"
STRANGER = "7777"  # no party of any incident


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder of our own, kept (and named in the output) when the test fails: pytest's numbered
    basetemp folders are pruned by any other pytest run of the same user meanwhile."""
    path = Path(tempfile.mkdtemp(prefix="voip-sos-e2e-"))
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"kept for inspection: {path}")


NS_CA = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"


class Pbx:
    """Kamailio relaying MESSAGEs to a SIPp SMS centre; phones register there by number."""

    def __init__(self, stack: ExitStack, numbers: list[str]) -> None:
        self.smsc = stack.enter_context(Sipp("uas_smsc", free_port(both=False), calls=1000, timeout_s=300))
        self.port = free_port()
        users = {"voip-sos": SIP_PASSWORD} | {n: PHONE_PASSWORD for n in numbers}
        self.kamailio = stack.enter_context(Kamailio(self.port, users, smsc=("127.0.0.1", self.smsc.port)))
        self.addr = ("127.0.0.1", self.port)

    def texts(self) -> list[str]:
        """Bodies of the MESSAGEs the SMS centre received."""
        out = []
        for block in self.smsc.messages().split("----------------------------------------------"):
            if "MESSAGE sip:" in block and "received" in block:
                _, _, body = block.replace("\r\n", "\n").partition("\n\n")
                out.append(body.strip())
        return out


def phone(stack: ExitStack, pbx: Pbx, number: str, record: Path) -> Baresip:
    record.mkdir(parents=True, exist_ok=True)
    return stack.enter_context(
        Baresip(baresip_port(), number, registrar=pbx.addr, password=PHONE_PASSWORD, record_dir=record)
    )


async def established(b: Baresip, count: int = 1, timeout_s: float = 20.0) -> None:
    await wait_for(lambda: b.output().count("Call established") >= count, timeout_s, f"{b.name} call {count}")


async def ended(b: Baresip, count: int = 1, timeout_s: float = 20.0) -> None:
    await wait_for(
        lambda: b.output().count("terminated (duration") >= count, timeout_s, f"{b.name} end {count}"
    )


def link_of(text: str) -> str:
    m = re.search(r"http://127\.0\.0\.1:\d+(/v/[A-Za-z0-9_\-]+)", text)
    assert m, f"no voice link in {text!r}"
    return m.group(1)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def calls_by_party(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """call_ended details per party (the call id is PARTY#ATTEMPT)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["kind"] == "call_ended":
            out.setdefault(e["detail"]["call"].split("#")[0], []).append(e["detail"])
    return out


async def loop_length(backend: Backend, uid: str, gap_s: float) -> tuple[Path, float]:
    wav = await backend.prompt_wav(uid)
    pcm, rate = read_wav(wav)
    return wav, len(pcm) / rate + gap_s


GAP_S = 0.5


async def test_sos_reaches_centre_and_contacts_who_hear_the_message(workdir: Path) -> None:
    """The happy path and everything seen along it: the centre hears the message at least twice and
    confirms with 1, each contact hears it (one repeats it with 9), SMS with uid, name, address and
    a working voice link, UPDATE → codes SMS, a second press joins, STATUS at each step, the
    timeline, /metrics, the link expiring, a call-back from the centre, a stranger's call refused,
    and a TEST press."""
    with ExitStack() as st:
        pbx = Pbx(st, [CENTRE, "2001", "2002", TEST_NUMBER, STRANGER])
        await wait_udp_listening(pbx.port, peer=pbx.kamailio)
        centre = phone(st, pbx, CENTRE, workdir / "rec-centre")
        son = phone(st, pbx, "2001", workdir / "rec-2001")
        daughter = phone(st, pbx, "2002", workdir / "rec-2002")
        tester = phone(st, pbx, TEST_NUMBER, workdir / "rec-test")
        stranger = phone(st, pbx, STRANGER, workdir / "rec-stranger")
        backend = Backend(
            workdir / "backend",
            pbx.addr,
            # baresip 1.0 answers an INVITE with a multipart body (SDP + PIDF-LO) with 500; the PIDF-LO
            # is checked against SIPp in the failure-path test instead.
            {"center": CENTRE, "backup": BACKUP, "test_number": TEST_NUMBER, "redial": 1,
             "redial_pause_s": 0.5, "ring_timeout_s": 8, "loop_gap_s": GAP_S, "max_call_s": 60,
             "pidf_lo": False, "callback_window_s": 120},
        )  # fmt: skip
        backend_http_ttl(backend, 10)
        await backend.provision(
            [
                subscriber(
                    "U1",
                    "Ann Smith",
                    "12 Elm Street, Springfield",
                    0,
                    [("Son", "2001"), ("Daughter", "2002")],
                ),
                subscriber("U2", "Bob Jones", "7 Oak Road, Shelbyville", 1, [("Wife", "2001")]),
            ]
        )
        for b in (centre, son, daughter, tester):
            await b.wait_output("200 OK", 10)
        template, loop_s = await loop_length(backend, "U1", GAP_S)
        await backend.start()
        st.callback(backend.kill9)
        opened_before = backend.metric("voip_sos_incidents_opened_total")

        # STB 0 is one agent (one socket, as on a real STB): press, press again, update, follow.
        client = await open_stb_client(
            stb_ip(0), bytes.fromhex(secret_hex(0)), [("127.0.0.1", backend.sos_port)]
        )
        st.callback(client.close)
        first = await client.request(MsgType.SOS)
        assert isinstance(first, ReceiptReceived)
        incident = first.incident_id
        again = await client.request(MsgType.SOS)  # a second press joins the open incident
        assert isinstance(again, ReceiptReceived) and again.incident_id == incident
        follow = asyncio.ensure_future(client.follow(120))

        await established(centre)
        t_centre = asyncio.get_running_loop().time()
        update = await client.request(MsgType.UPDATE, door_code="4711", parking_code="P12")
        assert isinstance(update, ReceiptReceived) and update.incident_id == incident
        same = await client.request(MsgType.UPDATE, door_code="4711", parking_code="P12")
        assert isinstance(same, ReceiptReceived)  # the same codes again: no second follow-up SMS

        async def contact(b: Baresip, repeat: bool) -> float | None:
            await established(b)
            t0 = asyncio.get_running_loop().time()
            t9 = None
            if repeat:
                await asyncio.sleep(loop_s * 0.5 + 1.0)
                t9 = asyncio.get_running_loop().time() - t0
                await b.command("sndcode", "9")
            await asyncio.sleep(loop_s + 1.0)
            await b.command("sndcode", "1")
            return t9

        # The voice link in the first SMS (link_ttl_s is 10 s here: fetched at once).
        first_text = await wait_for(lambda: [t for t in pbx.texts() if "/v/" in t], 15, "an SMS with a link")
        link = link_of(first_text[0])
        status, headers, body = backend.http_get(link)
        assert status == 200 and headers["Content-Type"].startswith("audio/"), (status, headers)
        assert body == template.read_bytes(), "the link does not serve the exact prompt WAV"
        status, _, part = backend.http_get(link, {"Range": "bytes=0-99"})
        assert status == 206 and part == body[:100]
        assert backend.http_get(link[:-4] + "AAAA")[0] == 404
        assert backend.http_get("/v/" + "A" * 22)[0] == 404
        assert backend.http_get("/")[0] == 404

        son_task = asyncio.ensure_future(contact(son, repeat=True))
        daughter_task = asyncio.ensure_future(contact(daughter, repeat=False))
        # The centre hears two whole loops, then confirms.
        await asyncio.sleep(max(0.0, t_centre + 2 * loop_s + 1.0 - asyncio.get_running_loop().time()))
        await centre.command("sndcode", "1")
        t9 = await asyncio.wait_for(son_task, 60)
        await asyncio.wait_for(daughter_task, 60)

        statuses = [s.status.name.lower() for s in await asyncio.wait_for(follow, 60)]
        assert statuses[0] == "calling" and statuses[-1] == "closed", statuses
        assert {"confirmed_centre", "confirmed_contact"} <= set(statuses), statuses
        inc = await backend.show(incident)
        assert inc["close_reason"] == "reached", inc
        events = inc["events"]
        k = kinds(events)
        for kind in ("sos_received", "incident_opened", "receipt_sent", "call_placed", "call_answered",
                     "dtmf", "call_ended", "sms_sending", "sms_result", "update_received", "incident_closed"):  # fmt: skip
            assert kind in k, (kind, k)
        assert k.count("sos_received") == 2  # the second press is in the same timeline
        by_party = calls_by_party(events)
        assert set(by_party) == {"centre", "contact:0", "contact:1"}, by_party
        for party, ends in by_party.items():
            assert ends[-1]["confirmed"] and ends[-1]["result"] == "confirmed", (party, ends)
        keys = [
            (e["detail"]["call"].split("#")[0], e["detail"]["key"]) for e in events if e["kind"] == "dtmf"
        ]
        assert ("contact:0", "9") in keys and ("centre", "1") in keys, keys
        centre_invite = [e for e in events if e["kind"] == "call_placed" and e["detail"]["party"] == "centre"]
        assert centre_invite and centre_invite[0]["detail"]["number"] == CENTRE

        # What the callees heard.
        await ended(centre)
        heard = recordings(workdir / "rec-centre")
        assert heard, "the centre recorded nothing"
        reps = repetitions(heard[0], template)
        assert len(reps) >= 2, f"the centre heard the message {len(reps)} times ({reps}), loop {loop_s:.1f} s"
        assert 0.8 * loop_s < reps[1] - reps[0] < 1.2 * loop_s + 0.5, reps
        for folder in ("rec-2001", "rec-2002"):
            files = recordings(workdir / folder)
            assert files and repetitions(files[0], template), f"{folder} did not hear the message"
        # 9 restarted the message from the top: a whole message starts right after the key.
        son_reps = repetitions(recordings(workdir / "rec-2001")[0], template)
        assert t9 is not None and any(t9 - 0.5 < r < t9 + 1.5 for r in son_reps), (t9, son_reps)

        # The texts at the SMS centre.
        texts = [t for t in pbx.texts() if "U1" in t]
        emergency = [t for t in texts if "4711" not in t]
        assert len(emergency) >= 3, texts  # centre + two contacts
        for t in emergency:
            assert "SOS" in t and "Ann Smith" in t and "12 Elm Street" in t, t
        codes = [t for t in texts if "4711" in t]
        assert codes and all("P12" in t for t in codes), texts
        assert len(codes) == 3, codes  # everyone told so far, once each

        # /metrics moved.
        assert backend.metric("voip_sos_incidents_opened_total") == opened_before + 1
        assert backend.metric("voip_sos_calls_total", result="confirmed") >= 3
        assert backend.metric("voip_sos_sms_total", result="accepted") >= 6
        assert backend.metric("voip_sos_incidents_closed_total", outcome="reached") >= 1
        assert backend.metric("voip_sos_pbx_registered") == 1
        # Collections are timed (every thread stops during one): serve's own, after start-up.
        assert backend.metric("voip_sos_gc_pause_seconds_count", generation="0", process="serve") >= 1

        # A call-back from the centre's number hears the message.
        await centre.command("dial", "sip:voip-sos@127.0.0.1")
        await established(centre, 2)
        await asyncio.sleep(loop_s + 1.0)
        await centre.command("hangup")
        await ended(centre, 2)
        heard = recordings(workdir / "rec-centre")
        assert len(heard) == 2 and repetitions(heard[1], template), "the call-back did not hear the message"
        assert "callback_answered" in kinds(await backend.events(incident))

        # Anyone else calling our number is refused, and hears nothing.
        await stranger.command("dial", "sip:voip-sos@127.0.0.1")
        await wait_for(lambda: "session closed: 403 Forbidden" in stranger.output(), 15, "the stranger refused")
        assert "not a party of a recent incident" in backend.log_text()
        assert not recordings(workdir / "rec-stranger")

        # TEST: only the test number is called and texted, marked TEST.
        test_press = await Press(backend, 1, "--test").start()
        st.callback(test_press.stop)
        await established(tester)
        await asyncio.sleep(1.0)
        await tester.command("sndcode", "1")
        tres = await test_press.result(40)
        tinc = await backend.show(tres["incident_id"])
        assert tinc["test"] and tinc["close_reason"] == "reached", tinc
        numbers = {
            e["detail"]["number"] for e in tinc["events"] if e["kind"] in ("call_placed", "sms_sending")
        }
        assert numbers == {TEST_NUMBER}, numbers
        ttexts = [t for t in pbx.texts() if "U2" in t]
        assert ttexts and all("TEST" in t for t in ttexts), ttexts

        # The link has expired by now (link_ttl_s 10).
        await wait_for(lambda: backend.http_get(link)[0] == 404, 15, "the voice link to expire")
        assert "Traceback" not in backend.log_text()


def backend_http_ttl(backend: Backend, ttl_s: int) -> None:
    text = backend.config.read_text().replace("http:\n", f"http:\n  link_ttl_s: {ttl_s}\n", 1)
    backend.config.write_text(text)


async def test_busy_no_answer_and_unconfirmed_are_retried_then_backup_and_nobody_reached(
    workdir: Path,
) -> None:
    """Centre busy twice → backup, which rings without answer (CANCEL) twice; a contact answers but
    hangs up without pressing 1, twice; nobody is reached: STATUS nobody_reached, incident closes
    "unreached" with one ERROR line. The centre's INVITE carries a valid PIDF-LO."""
    with ExitStack() as st:
        pbx = Pbx(st, [CENTRE, BACKUP, "2001"])
        await wait_udp_listening(pbx.port, peer=pbx.kamailio)
        busy = st.enter_context(Sipp("uas_busy", free_port(both=False), calls=2, timeout_s=60))
        silent = st.enter_context(Sipp("uas_ring_cancel", free_port(both=False), calls=2, timeout_s=60))
        register_sipp(pbx.port, CENTRE, busy.port)
        register_sipp(pbx.port, BACKUP, silent.port)
        son = phone(st, pbx, "2001", workdir / "rec-2001")
        await son.wait_output("200 OK", 10)
        backend = Backend(
            workdir / "backend",
            pbx.addr,
            {"center": CENTRE, "backup": BACKUP, "test_number": TEST_NUMBER, "redial": 1,
             "redial_pause_s": 0.5, "ring_timeout_s": 2, "loop_gap_s": GAP_S, "max_call_s": 60},
        )  # fmt: skip
        await backend.provision(
            [subscriber("U7", "Carl Young", "3 Pine Lane, Ogdenville", 7, [("Son", "2001")])]
        )
        await backend.start()
        st.callback(backend.kill9)
        press = await Press(backend, 7).start()
        st.callback(press.stop)
        for n in (1, 2):  # the contact answers, listens a little, hangs up without the key
            await established(son, n)
            await asyncio.sleep(1.5)
            await son.command("hangup")
            await ended(son, n)
        result = await press.result(60)
        statuses = [s["status"] for s in result["statuses"]]
        assert statuses[0] == "calling" and "nobody_reached" in statuses and statuses[-1] == "closed", (
            statuses
        )
        inc = await backend.show(result["incident_id"])
        assert inc["close_reason"] == "unreached", inc
        events = inc["events"]
        placed = [(e["detail"]["call"], e["detail"]["number"]) for e in events if e["kind"] == "call_placed"]
        centre_numbers = [n for c, n in placed if c.startswith("centre")]
        assert centre_numbers == [CENTRE, CENTRE, BACKUP, BACKUP], placed
        by_party = calls_by_party(events)
        assert [(c["status"], c["result"]) for c in by_party["centre"]] == [
            (486, "busy"),
            (486, "busy"),
            (487, "no_answer"),
            (487, "no_answer"),
        ], by_party["centre"]
        assert [c["result"] for c in by_party["contact:0"]] == ["unconfirmed", "unconfirmed"], by_party
        assert sum(1 for e in events if e["kind"] == "call_cancel") == 2, kinds(events)
        assert "CANCEL sip:" in silent.messages() and silent.messages().count("487 Request Terminated") >= 2
        log = backend.log_text()
        assert sum(1 for line in log.splitlines() if " error " in line and "nobody confirmed" in line) == 1
        assert backend.metric("voip_sos_incidents_closed_total", outcome="unreached") == 1
        assert backend.metric("voip_sos_calls_total", result="busy") == 2
        assert backend.metric("voip_sos_calls_total", result="unconfirmed") == 2

        # The centre's INVITE: Priority, a display name with the uid, and PIDF-LO (RFC 6442/5139).
        invite = busy.messages().split("INVITE sip:", 1)[1].split("\n\n\n", 1)[0]
        assert re.search(r"(?im)^Priority:\s*emergency", invite), invite
        assert re.search(r"(?im)^From:.*U7", invite), invite
        assert re.search(r"(?im)^Geolocation:\s*<cid:", invite), invite
        body = invite.split("application/pidf+xml", 1)[1]
        xml = body[body.index("<?xml") if "<?xml" in body else body.index("<presence") :]
        xml = xml[: xml.index("</presence>") + len("</presence>")]
        root = ET.fromstring(xml)
        civic = root.find(f".//{{{NS_CA}}}civicAddress")
        assert civic is not None
        fields = {child.tag.split("}", 1)[1]: (child.text or "") for child in civic}
        assert (
            fields.get("A3") == "Springfield"
            and fields.get("RD") == "Elm Street"
            and fields.get("HNO") == "12"
        ), fields
        _, address = parse_pidf_lo(xml.encode())
        assert address.A3 == "Springfield"


async def test_cancel_stops_ringing_calls_but_never_cuts_an_answered_one(workdir: Path) -> None:
    """CANCEL from the STB while the centre and a contact talk and another contact rings: the ringing
    call is cancelled, the answered ones go on until their callees hang up, everyone told gets the
    false-alarm SMS, and the incident closes "false_alarm" when the last call ends."""
    with ExitStack() as st:
        pbx = Pbx(st, [CENTRE, "2001", "3001"])
        await wait_udp_listening(pbx.port, peer=pbx.kamailio)
        ringing = st.enter_context(Sipp("uas_ring_cancel", free_port(both=False), calls=1, timeout_s=60))
        register_sipp(pbx.port, "3001", ringing.port)
        centre = phone(st, pbx, CENTRE, workdir / "rec-centre")
        son = phone(st, pbx, "2001", workdir / "rec-2001")
        for b in (centre, son):
            await b.wait_output("200 OK", 10)
        backend = Backend(
            workdir / "backend",
            pbx.addr,
            {"center": CENTRE, "backup": BACKUP, "test_number": TEST_NUMBER, "redial": 1,
             "redial_pause_s": 0.5, "ring_timeout_s": 30, "loop_gap_s": GAP_S, "max_call_s": 60,
             "pidf_lo": False},
        )  # fmt: skip
        await backend.provision(
            [
                subscriber(
                    "U3", "Dora Lee", "5 Birch Way, Capital City", 3, [("Son", "2001"), ("Aunt", "3001")]
                )
            ]
        )
        await backend.start()
        st.callback(backend.kill9)
        client = await open_stb_client(
            stb_ip(3), bytes.fromhex(secret_hex(3)), [("127.0.0.1", backend.sos_port)]
        )
        st.callback(client.close)
        first = await client.request(MsgType.SOS)
        assert isinstance(first, ReceiptReceived)
        incident = first.incident_id
        follow = asyncio.ensure_future(client.follow(60))
        await established(centre)
        await established(son)
        await wait_for(lambda: "180 Ringing" in ringing.messages(), 10, "the aunt's phone ringing")
        await wait_for(lambda: len([t for t in pbx.texts() if "U3" in t]) >= 3, 15, "three emergency SMS")

        cancel = await client.request(MsgType.CANCEL)
        assert isinstance(cancel, ReceiptReceived) and cancel.incident_id == incident
        await wait_for(lambda: "CANCEL sip:" in ringing.messages(), 10, "the ringing call cancelled")
        # The TV is told at once that it is over, while the answered calls go on.
        statuses = [s.status.name.lower() for s in await asyncio.wait_for(follow, 10)]
        assert statuses[0] == "calling" and statuses[-1] == "closed", statuses
        await asyncio.sleep(3.0)  # answered calls are not cut
        assert "terminated (duration" not in centre.output() and "terminated (duration" not in son.output()
        alarms = await wait_for(
            lambda: [t for t in pbx.texts() if "false alarm" in t and "U3" in t], 10, "false-alarm SMS"
        )
        assert len(alarms) == 3 and all("Dora Lee" in t and "5 Birch Way" in t for t in alarms), alarms
        # The store marks the incident cancelled at once (a new press is a new emergency) ...
        inc = await backend.show(incident)
        assert inc["state"] == "cancelled" and inc["close_reason"] == "false_alarm", inc

        await son.command("hangup")
        await ended(son)

        async def son_ended_logged() -> bool:
            return any(
                e["detail"]["call"] == "contact:0#1" for e in await backend.events(incident, "call_ended")
            )

        await wait_for(son_ended_logged, 10, "the son's hang-up in the log")
        # ... and a crash while the centre still talks: the restarted backend ends that call.
        backend.kill9()
        assert "terminated (duration" not in centre.output()
        await backend.start()
        await ended(centre, timeout_s=15)
        assert "call left open by the crash ended" in backend.log_text()
        inc = await backend.show(incident)
        by_party = calls_by_party(inc["events"])
        assert [c["result"] for c in by_party["contact:1"]] == ["cancelled"], by_party
        assert [c["by"] for c in by_party["contact:0"]] == ["remote"], by_party  # the callee hung up
        placed = [e["detail"]["call"] for e in inc["events"] if e["kind"] == "call_placed"]
        assert sorted(placed) == ["centre#1", "contact:0#1", "contact:1#1"], placed  # no new calls
        # The calls' end is recorded once, by the process that ended the last of them.
        finished = [e["detail"] for e in inc["events"] if e["kind"] == "calls_finished"]
        assert finished == [{"reason": "false_alarm", "reached": [], "after_restart": True}], finished


async def test_kill_9_mid_call_then_restart_ends_the_call_and_resumes(workdir: Path) -> None:
    """`kill -9` of serve while the centre hears the message and a contact has confirmed: after a
    restart the centre's open call is ended with BYE, the centre is called again (and confirms), the
    contact who confirmed is not called again."""
    with ExitStack() as st:
        pbx = Pbx(st, [CENTRE, "2001"])
        await wait_udp_listening(pbx.port, peer=pbx.kamailio)
        centre = phone(st, pbx, CENTRE, workdir / "rec-centre")
        son = phone(st, pbx, "2001", workdir / "rec-2001")
        for b in (centre, son):
            await b.wait_output("200 OK", 10)
        backend = Backend(
            workdir / "backend",
            pbx.addr,
            {"center": CENTRE, "backup": BACKUP, "test_number": TEST_NUMBER, "redial": 1,
             "redial_pause_s": 0.5, "ring_timeout_s": 10, "loop_gap_s": GAP_S, "max_call_s": 60,
             "pidf_lo": False},
        )  # fmt: skip
        await backend.provision(
            [subscriber("U4", "Eve Park", "9 Cedar Court, Springfield", 4, [("Son", "2001")])]
        )
        await backend.start()
        st.callback(backend.kill9)
        press = await Press(backend, 4).start()
        st.callback(press.stop)
        incident = await incident_of(backend, "U4")
        await established(centre)
        await established(son)
        await asyncio.sleep(1.0)
        await son.command("sndcode", "1")
        await wait_for(lambda: "terminated (duration" in son.output(), 15, "the son's confirmed call to end")
        await wait_for(lambda: backend.events(incident, "call_ended"), 5, "the son's confirmation in the log")
        assert "terminated (duration" not in centre.output()
        backend.kill9()
        await asyncio.sleep(0.5)
        assert "terminated (duration" not in centre.output()  # nobody said BYE yet

        await backend.start()
        await ended(centre, 1, timeout_s=15)  # the call left open is ended with BYE
        await established(centre, 2)  # and the centre is called again
        await asyncio.sleep(1.0)
        await centre.command("sndcode", "1")
        closed = await wait_for(lambda: backend.closed(incident), 20, "the resumed incident to close")
        assert closed["close_reason"] == "reached", closed
        events = closed["events"]
        assert "incident_resumed" in kinds(events)
        placed = [e["detail"]["call"] for e in events if e["kind"] == "call_placed"]
        assert sum(1 for c in placed if c.startswith("contact:0")) == 1, placed  # confirmed: not again
        assert sum(1 for c in placed if c.startswith("centre")) == 2, placed
        assert son.output().count("Call established") == 1
        # An SMS is sent at least once: each party's emergency SMS has a result in the log.
        results = {
            e["detail"]["number"]
            for e in events
            if e["kind"] == "sms_result" and e["detail"]["kind"] == "emergency"
        }
        assert {CENTRE, "2001"} <= results, results
