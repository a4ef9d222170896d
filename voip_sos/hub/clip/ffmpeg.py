"""ffmpeg and ffprobe command lines for the camera buffer and the clip cutter (pure functions).

Why these choices (docs/clip.md has the longer story):
- RTSP over TCP (`-rtsp_transport tcp`): interleaved in the RTSP connection, no UDP port pairs
  through the home router, no loss-induced corruption; `-timeout` ends a run whose camera went
  silent (socket I/O timeout, µs) so the recorder can reconnect.
- The segment muxer with `-c copy`: H.264 is written as the camera sent it, no decoding, so a
  camera costs almost no CPU. A segment can only start at a keyframe, so `-segment_time` is a
  minimum and the camera's keyframe interval decides the real length.
- MPEG-TS segments: each one stands alone (no init segment, no moov to finish), a segment cut
  short by a dropped camera or a power cut is still readable up to its last packet, and the
  concat demuxer joins them with continuous timestamps. Fragmented MP4 would need its init segment
  kept beside every media segment and dies with an unfinished fragment.
- `-segment_list pipe:1` (CSV): ffmpeg reports each finished segment on stdout the moment it
  closes it, so the recorder learns of segments without polling the folder.
- Clips: the concat demuxer over the chosen segments, `-c copy`, `-movflags +faststart` (the moov
  up front: a browser starts playing before the whole file is there).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SOCKET_TIMEOUT_US",
    "cut_args",
    "faststart_args",
    "probe_codec_args",
    "probe_duration_args",
    "record_args",
]

SOCKET_TIMEOUT_US = 5_000_000
# ffmpeg's RTSP demuxer hands out the first keyframe without timestamps (and, with B-frames, the
# next frames without a DTS); the MPEG-TS muxer then refuses the stream ("first pts and dts value
# must be set") and the camera never records. Give the first packet 0 and a missing DTS the one
# before plus one: monotonic, never after its PTS, and nothing is dropped.
FIX_FIRST_TIMESTAMPS = (
    "setts=pts=if(eq(PTS\\,NOPTS)\\,0\\,PTS)"
    ":dts=if(eq(DTS\\,NOPTS)\\,if(eq(N\\,0)\\,0\\,PREV_OUTDTS+1)\\,DTS)"
)


def _input(url: str) -> list[str]:
    return ["-rtsp_transport", "tcp", "-timeout", str(SOCKET_TIMEOUT_US), "-i", url]


def record_args(url: str, pattern: Path, *, segment_s: float, transcode_height: int | None,
                ffmpeg: str = "ffmpeg") -> list[str]:  # fmt: skip
    """Buffer `url` into MPEG-TS segments named by `pattern` (with %06d); finished segments are
    listed on stdout as CSV `name,start,end`. With `transcode_height`, re-encode to H.264 at that
    height with a keyframe every `segment_s` (H.265/MJPEG cameras); otherwise copy."""
    if transcode_height is None:
        video = ["-c:v", "copy", "-bsf:v", FIX_FIRST_TIMESTAMPS]
    else:
        video = [
            # Never upscale: a sub-stream smaller than the target stays as it is.
            "-vf", f"scale=-2:'min(ih,{transcode_height})'",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-crf", "28",
            "-pix_fmt", "yuv420p",
            # A keyframe at every segment boundary: segments and clip cuts land where we ask.
            "-force_key_frames", f"expr:gte(t,n_forced*{segment_s:g})",
        ]  # fmt: skip
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning",
        *_input(url),
        # Video only: camera audio is mostly G.711, which MP4 in a browser cannot play.
        "-map", "0:v:0", *video, "-an",
        "-f", "segment", "-segment_time", f"{segment_s:g}", "-segment_format", "mpegts",
        "-segment_list", "pipe:1", "-segment_list_type", "csv",
        str(pattern),
    ]  # fmt: skip


def probe_codec_args(url: str, ffprobe: str = "ffprobe") -> list[str]:
    """Print the first video stream's codec name (h264, hevc, mjpeg ...)."""
    return [
        ffprobe, "-v", "error", *_input(url),
        "-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
    ]  # fmt: skip


def probe_duration_args(path: Path, ffprobe: str = "ffprobe") -> list[str]:
    """Print a media file's duration in seconds."""
    return [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]


def cut_args(concat_list: Path, out: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    """Join the segments named in `concat_list` into one MP4 with the index up front, no re-encoding."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(concat_list),
        "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip


def faststart_args(src: Path, out: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    """Remux an MP4 (e.g. Frigate's fragmented one) into a plain MP4 with the index up front."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-i", str(src), "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(out),
    ]  # fmt: skip
