"""The hub's camera clips (F9): rolling buffers, cutting, uploading; docs/clip.md."""

from voip_sos.hub.clip.cut import ClipFile, ToolError
from voip_sos.hub.clip.jobs import ClipItem, ClipJob
from voip_sos.hub.clip.recorder import CameraHealth, CameraRecorder, RecorderSettings
from voip_sos.hub.clip.segments import Gap, Segment, SegmentIndex, Selection
from voip_sos.hub.clip.service import ClipService

__all__ = [
    "CameraHealth",
    "CameraRecorder",
    "ClipFile",
    "ClipItem",
    "ClipJob",
    "ClipService",
    "Gap",
    "RecorderSettings",
    "Segment",
    "SegmentIndex",
    "Selection",
    "ToolError",
]
