#!/usr/bin/python3
"""A stand-in IP camera: GStreamer's RTSP server (Debian's gst-rtsp-server, run under Debian's own
/usr/bin/python3 with python3-gi, never the project's venv) serving one or more mounts.

Live mounts (`--live NAME:CODEC`) encode a test picture whose frames carry their own wall-clock
time, pixel-coded: two identical bands of 48 black/white blocks, the ms timestamp MSB first
(tests/clip/camera.py reads it back out of a decoded frame). H.264 (x264) or H.265 (x265), a
keyframe every `--gop` frames. File mounts (`--file NAME:PATH[:h265]`) play a pre-encoded H.264 (or
H.265) MP4 at its own pace, so no live encoder competes for the CPU (the clip benchmark).

With `--user`/`--password` every mount needs RTSP Basic authentication, like a real camera.
Prints `ready PORT` on stdout once it listens; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

WIDTH, HEIGHT = 320, 240
BITS = 48
BLOCK_W, BLOCK_H = 13, 16
LEFT = 4
BLACK, WHITE, GREY = 16, 235, 128
BANDS_Y = (0, 2 * BLOCK_H)  # two bands, two block rows each: 24 blocks per row


def code_rows(ms: int) -> bytes:
    """The luma rows of one band (2 x BLOCK_H rows) coding `ms`."""
    rows = []
    for half in range(2):
        row = bytearray([GREY]) * WIDTH
        for i in range(24):
            bit = (ms >> (BITS - 1 - (half * 24 + i))) & 1
            x = LEFT + i * BLOCK_W
            row[x : x + BLOCK_W] = bytes([WHITE if bit else BLACK]) * BLOCK_W
        rows.append(bytes(row) * BLOCK_H)
    return b"".join(rows)


class LiveSource:
    """Frames for appsrc: the coded time at the top, a moving bar below (so frames differ)."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.n = 0
        self.sources: list[Gst.Element] = []
        top = 2 * len(BANDS_Y) * BLOCK_H
        self.rest_rows = HEIGHT - top
        self.chroma = bytes([128]) * (WIDTH * HEIGHT // 2)

    def frame(self, ms: int) -> bytes:
        band = code_rows(ms)
        bar_x = (self.n * 8) % (WIDTH - 40)
        row = bytearray([60]) * WIDTH
        row[bar_x : bar_x + 40] = bytes([200]) * 40
        return band * len(BANDS_Y) + bytes(row) * self.rest_rows + self.chroma

    def tick(self) -> bool:
        self.n += 1
        if self.sources:
            data = self.frame(int(time.time() * 1000))
            for src in list(self.sources):
                buf = Gst.Buffer.new_wrapped(data)
                if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    pass  # not playing yet, or flushing: the next tick tries again
        return True


def live_launch(codec: str, fps: int, gop: int, kbps: int) -> str:
    caps = f"video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={fps}/1"
    src = f"appsrc name=src is-live=true do-timestamp=true format=time caps={caps}"
    if codec == "h264":
        enc = (
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
            "! video/x-h264,profile=baseline ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1"
        )
    elif codec == "h265":
        enc = (
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
            "! h265parse ! rtph265pay name=pay0 pt=96 config-interval=1"
        )
    else:
        raise SystemExit(f"unknown codec {codec!r} (h264 or h265)")
    return f"( {src} ! queue ! {enc} )"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--live", action="append", default=[], help="NAME:h264|h265")
    ap.add_argument("--file", action="append", default=[], help="NAME:PATH[:h265] (H.264 or H.265 in MP4)")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--gop", type=int, default=10, help="frames between keyframes")
    ap.add_argument("--kbps", type=int, default=300)
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    live = LiveSource(args.fps)

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera-user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)

    def permit(factory: GstRtspServer.RTSPMediaFactory) -> None:
        if args.user:
            perms = Gst.Structure.new_empty("camera-user")
            perms.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
            perms.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
            factory.add_role_from_structure(perms)

    def on_configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_child_by_name("src")
        live.sources.append(src)
        media.connect("unprepared", lambda *_: src in live.sources and live.sources.remove(src))

    for spec in args.live:
        name, _, codec = spec.partition(":")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(live_launch(codec or "h264", args.fps, args.gop, args.kbps))
        factory.set_shared(True)
        factory.connect("media-configure", on_configure)
        permit(factory)
        mounts.add_factory(f"/{name}", factory)
    for spec in args.file:
        name, _, rest = spec.partition(":")
        path, _, codec = rest.partition(":")
        parse, pay = ("h265parse", "rtph265pay") if codec == "h265" else ("h264parse", "rtph264pay")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f"( filesrc location={path} ! qtdemux ! {parse} ! {pay} name=pay0 pt=96 config-interval=1 )"
        )
        factory.set_shared(True)
        permit(factory)
        mounts.add_factory(f"/{name}", factory)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    GLib.timeout_add(max(1, 1000 // args.fps), live.tick)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print(f"ready {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
