"""The backend's view of the hubs' cameras: each `camera` event a hub sends, as one log line.

A hub reports a camera whenever its buffer changes state (starting, recording, reconnecting,
stopped), with the error and any gap a reconnection closed; docs/clip.md lists the fields. A camera
that is not recording is a warning: its home's next SOS may come without video.
"""

from __future__ import annotations

import logging

from voip_sos.hub.topics import HubEvent

__all__ = ["log_camera_health"]

log = logging.getLogger(__name__)


def log_camera_health(event: HubEvent) -> None:
    d = event.data
    state = str(d.get("state") or "")
    fields = {
        "hub": event.hub_id,
        "camera": d.get("camera"),
        "state": state,
        "error": d.get("error"),
        "buffered_s": d.get("buffered_s"),
        "restarts": d.get("restarts"),
    }
    gap = d.get("gap")
    if isinstance(gap, dict):
        fields["gap_s"] = round(float(gap.get("end", 0)) - float(gap.get("start", 0)), 1)
    if state in ("recording", "starting"):
        log.info("home camera %s", state, extra=fields)
    else:
        log.warning("home camera %s", state, extra=fields)
