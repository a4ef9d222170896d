"""The clip code's pure parts: the segment index (selection, gaps, pruning), camera configuration,
job pairing, the incident context's upload grant, the ffmpeg command lines; and the recorder taking
back a buffer left on disk (real MPEG-TS files made by ffmpeg)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from voip_sos.errors import ConfigError
from voip_sos.hub.cameras import Camera, parse_cameras
from voip_sos.hub.clip.ffmpeg import cut_args, record_args
from voip_sos.hub.clip.jobs import JOIN_S, ClipItem, ClipJob, match_context, match_press
from voip_sos.hub.clip.recorder import INDEX_FILE, CameraRecorder, RecorderSettings
from voip_sos.hub.clip.segments import Gap, Segment, SegmentIndex
from voip_sos.hub.config import load_hub_config, render_hub_config
from voip_sos.hub.topics import IncidentContext


def segs(*spans: tuple[float, float], size: int = 1000) -> list[Segment]:
    """Segments from (wall end, duration) pairs."""
    return [Segment(f"r1-{i:06d}.ts", "r1", end, dur, size) for i, (end, dur) in enumerate(spans)]


def steady(n: int, *, start: float = 1000.0, dur: float = 2.0) -> list[Segment]:
    return segs(*((start + dur * (i + 1), dur) for i in range(n)))


# -- the segment index ----------------------------------------------------------------------------


def test_select_takes_whole_segments_back_from_the_press() -> None:
    index = SegmentIndex(steady(20))  # 1000..1040
    sel = index.select(until=1031.0, seconds=6.0)
    # The segment holding the press (1030-1032) is the last; three segments hold 6 s.
    assert [s.end for s in sel.segments] == [1028.0, 1030.0, 1032.0]
    assert sel.duration == 6.0 and sel.start == 1026.0 and sel.gaps == ()
    # Not a multiple of the segment length: one segment more, never less.
    assert index.select(until=1031.0, seconds=5.0).duration == 6.0
    # More than the buffer holds: everything before the press.
    assert index.select(until=1031.0, seconds=300.0).duration == 32.0
    assert index.select(until=999.0, seconds=5.0).segments == ()


def test_a_camera_that_came_back_leaves_a_gap_the_clip_reports() -> None:
    index = SegmentIndex()
    assert index.add(Segment("a", "r1", 1002.0, 2.0, 10)) is None
    assert index.add(Segment("b", "r1", 1004.3, 2.0, 10)) is None  # jitter, not a gap
    gap = index.add(Segment("c", "r2", 1014.0, 2.0, 10))
    assert gap == Gap(1004.3, 1012.0) and gap.seconds == pytest.approx(7.7)
    sel = index.select(until=1013.0, seconds=5.0)
    assert [s.name for s in sel.segments] == ["a", "b", "c"] and sel.gaps == (gap,)
    assert index.covers(1014.0) and not index.covers(1014.5)


def test_prune_by_age_and_size_but_never_held_or_newest() -> None:
    index = SegmentIndex(steady(10))  # ends 1002..1020, 1000 bytes each
    gone = index.prune(now=1020.0, keep_s=9.0, max_bytes=10**9)
    assert [s.end for s in gone] == [1002.0, 1004.0, 1006.0, 1008.0, 1010.0]
    index = SegmentIndex(steady(10))
    gone = index.prune(now=1020.0, keep_s=9.0, max_bytes=10**9, held=[(1003.0, 1007.0)])
    assert [s.end for s in gone] == [1002.0, 1010.0]  # 1004-1008 are being cut into a clip
    index = SegmentIndex(steady(10))
    gone = index.prune(now=1020.0, keep_s=100.0, max_bytes=3500)
    assert len(index) == 3 and [s.end for s in gone] == [
        1002.0,
        1004.0,
        1006.0,
        1008.0,
        1010.0,
        1012.0,
        1014.0,
    ]
    index = SegmentIndex(steady(3, dur=2.0))
    index.prune(now=1006.0, keep_s=100.0, max_bytes=10)
    assert len(index) == 1  # over the cap, but a buffer always keeps its newest segment


def test_segment_lines_round_trip() -> None:
    seg = Segment("r17-000003.ts", "r17", 1795556197.464, 2.012, 22184)
    assert Segment.from_json(seg.to_json()) == seg


# -- the recorder's buffer on disk ----------------------------------------------------------------


def _ts(path: Path, seconds: float) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-f", "mpegts", str(path)],
        check=True, timeout=30,
    )  # fmt: skip


async def test_recorder_takes_back_the_buffer_a_restart_left(tmp_path: Path) -> None:
    folder = tmp_path / "hall"
    folder.mkdir()
    now = 2_000_000_000.0
    for i, name in enumerate(("r1-000000.ts", "r1-000001.ts", "r1-000002.ts")):
        _ts(folder / name, 2.0)
        os.utime(folder / name, (now - 10 + 2 * i, now - 10 + 2 * i))
    (folder / "r1-000009.ts").write_bytes(b"not video")  # cut short before its first frame
    lines = [
        Segment("r1-000000.ts", "r1", now - 10, 2.0, 100).to_json(),
        Segment("r1-000001.ts", "r1", now - 8, 2.0, 100).to_json(),
        Segment("r1-000005.ts", "r1", now - 7, 2.0, 100).to_json(),  # its file is gone
        '{"name": "r1-0000',  # the line a power cut interrupted
    ]
    (folder / INDEX_FILE).write_text("\n".join(lines) + "\n")
    rec = CameraRecorder(Camera("hall", "rtsp://127.0.0.1:1/x"), folder,
                         RecorderSettings(keep_s=60, max_bytes=10**9), wall=lambda: now)  # fmt: skip
    await rec._load()
    # The two listed segments, then the one ffmpeg never listed (probed: 2 s of video, ending at
    # its file's time).
    assert [s.name for s in rec.index.segments] == ["r1-000000.ts", "r1-000001.ts", "r1-000002.ts"]
    assert rec.index.segments[2].duration == pytest.approx(2.0, abs=0.2)
    assert rec.index.segments[2].end == pytest.approx(now - 6)
    assert not (folder / "r1-000009.ts").exists()
    rewritten = [json.loads(x)["name"] for x in (folder / INDEX_FILE).read_text().splitlines()]
    assert rewritten == ["r1-000000.ts", "r1-000001.ts", "r1-000002.ts"]


# -- configuration --------------------------------------------------------------------------------


def test_camera_entries_are_checked_and_named() -> None:
    cams = parse_cameras(
        [{"name": "hall", "url": "rtsp://10.0.0.5/s2", "username": "v", "password": "p w@x"}]
    )
    assert cams[0].source_url() == "rtsp://v:p%20w%40x@10.0.0.5/s2" and cams[0].mode == "auto"
    assert (
        cams[0].redact("failed rtsp://v:p%20w%40x@10.0.0.5/s2 (p w@x)")
        == "failed rtsp://v:********@10.0.0.5/s2 (********)"
    )
    assert parse_cameras(json.dumps([{"name": "a", "url": "rtsp://h/x"}]))[0].name == "a"  # env: JSON
    for bad, message in (
        ([{"name": "Hall!", "url": "rtsp://h/x"}], "item 1: name"),
        ([{"name": "hall", "url": "http://h/x"}], "item 1 (hall): url: expected rtsp://"),
        ([{"name": "hall", "url": "rtsp://u:p@h/x"}], "credentials in username and password"),
        (
            [{"name": "hall", "url": "rtsp://h/x", "mode": "h265"}],
            "mode: expected one of auto, copy, transcode",
        ),
        ([{"name": "hall", "url": "rtsp://h/x", "port": 554}], "unknown field port"),
        ([{"name": "a", "url": "rtsp://h/x"}, {"name": "a", "url": "rtsp://h/y"}], "used twice"),
        ("hall", "expected a list of cameras"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_cameras(bad)


def _hub_yaml(tmp_path: Path, clip: dict[str, object]) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"hub": {"id": "hub-1", "stb_key": "00" * 32}, "clip": clip}))
    return path


def test_hub_config_clip_section(tmp_path: Path) -> None:
    cfg = load_hub_config(
        _hub_yaml(tmp_path, {"cameras": [{"name": "hall", "url": "rtsp://h/x", "password": "secret"}],
                             "clip_s": 60, "first_s": 20}),
        environ={"VOIP_HUB_CLIP_SEGMENT_S": "1"},
    )  # fmt: skip
    assert cfg.clip.clip_s == 60.0 and cfg.clip.segment_s == 1.0 and cfg.clip.cameras[0].name == "hall"
    shown = render_hub_config(cfg)
    assert "secret" not in shown and "********" in shown
    assert Path(cfg.clip.buffer_dir).is_absolute()
    with pytest.raises(
        ConfigError, match=r"clip\.segment_s: expected at least 1 second, got 0\.2 \(hub\.yaml line"
    ):
        load_hub_config(_hub_yaml(tmp_path, {"segment_s": 0.2}), environ={})
    with pytest.raises(ConfigError) as err:
        load_hub_config(_hub_yaml(tmp_path, {"cameras": [{"name": "hall"}], "first_s": 400}), environ={})
    assert "clip.first_s: longer than clip.clip_s" in str(err.value)
    assert "clip.cameras: camera hall needs a url" in str(err.value)
    with pytest.raises(ConfigError, match=r"clip\.frigate_url: required"):
        load_hub_config(_hub_yaml(tmp_path, {"source": "frigate", "cameras": [{"name": "hall"}]}), environ={})
    with pytest.raises(ConfigError, match=r"clip.cameras: item 1 \(hall\): url"):
        load_hub_config(
            _hub_yaml(tmp_path, {}), environ={"VOIP_HUB_CLIP_CAMERAS": '[{"name": "hall", "url": "ftp://x"}]'}
        )


# -- jobs and the context -------------------------------------------------------------------------


def test_one_press_one_job_and_the_context_finds_it() -> None:
    old = ClipJob("j1", press_at=1000.0, incident="7")
    new = ClipJob("j2", press_at=5000.0)
    assert match_press([old, new], 5000.0 + JOIN_S - 1) is new  # a repeated press joins
    assert match_press([old, new], 5000.0 + JOIN_S + 1) is None
    assert match_context([old, new], "7", 5001.0) is old  # its own incident, whenever
    assert match_context([old, new], "8", 5001.0) is new  # the unbound job pressed just before
    assert match_context([old, new], "8", 5000.0 + JOIN_S + 5) is None  # too late: a job of its own
    job = ClipJob("j3", 1.5, "9", "http://b/hub/v1/clips/9", "tok", [ClipItem("hall", "recent", 30.0)])
    assert ClipJob.from_json(job.to_json()) == job


def test_the_context_carries_the_upload_grant_only_when_there_is_one() -> None:
    plain = IncidentContext("7", "U1", "1 Road", "+861")
    assert "upload" not in plain.to_json().decode()
    assert IncidentContext.from_json(plain.to_json()) == plain
    granted = IncidentContext("7", "U1", "1 Road", "+861", "https://b/hub/v1/clips/7", "t" * 22)
    assert IncidentContext.from_json(granted.to_json()) == granted
    with pytest.raises(ValueError, match="upload_url and upload_token must be strings"):
        IncidentContext.from_json(json.dumps({**json.loads(plain.to_json()), "upload_token": 5}).encode())


def test_ffmpeg_command_lines() -> None:
    copy = record_args("rtsp://h/x", Path("/b/r1-%06d.ts"), segment_s=2, transcode_height=None)
    assert copy[copy.index("-rtsp_transport") + 1] == "tcp" and copy[copy.index("-c:v") + 1] == "copy"
    assert (
        copy[copy.index("-segment_list") + 1] == "pipe:1"
        and copy[copy.index("-segment_format") + 1] == "mpegts"
    )
    assert "libx264" not in copy
    h265 = record_args("rtsp://h/x", Path("/b/r1-%06d.ts"), segment_s=2, transcode_height=360)
    assert h265[h265.index("-c:v") + 1] == "libx264" and "scale=-2:'min(ih,360)'" in h265
    assert "expr:gte(t,n_forced*2)" in h265
    cut = cut_args(Path("/o/l.ffconcat"), Path("/o/c.mp4"))
    assert cut[cut.index("-c") + 1] == "copy" and "+faststart" in cut and cut[cut.index("-f") + 1] == "concat"
