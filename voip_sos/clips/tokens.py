"""Upload grants: an incident-bound, expiring token a hub uploads that incident's clips with.

When an SOS from a home with a hub opens an incident, the backend issues a grant (a link of kind
`clip_upload` in the link store: only its SHA-256 is stored, its target is the hub id) and sends
URL and token to that hub inside the MQTT incident context. The broker's ACL lets only that hub
read its own `cmd/context`, so the token reaches no one else; it opens uploads for that one incident
only, and expires by itself (`http.clip_upload_ttl_s`). Nothing is provisioned on the hub for it,
and a leaked token cannot touch another home's incident. docs/clip.md weighs it against a
per-hub upload secret.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from voip_sos.hub.topics import IncidentContext
from voip_sos.web.links import Link, LinkStore

__all__ = [
    "CLIP_UPLOAD_KIND",
    "CLIP_UPLOAD_PATH",
    "ClipGrants",
    "ClipUploadGrant",
    "clip_upload_url",
    "issue_clip_upload",
]

CLIP_UPLOAD_KIND = "clip_upload"
CLIP_UPLOAD_PATH = "/hub/v1/clips/"
"""Uploads go to `CLIP_UPLOAD_PATH + <incident>/<camera>/<part>`."""


@dataclass(frozen=True, slots=True)
class ClipUploadGrant:
    """What the incident context carries to the hub."""

    url: str
    """`<public_url>/hub/v1/clips/<incident>`; the hub appends `/<camera>/<part>`."""
    token: str
    expires_at: datetime


def clip_upload_url(public_url: str, incident_id: int | str) -> str:
    return f"{public_url.rstrip('/')}{CLIP_UPLOAD_PATH}{incident_id}"


async def issue_clip_upload(links: LinkStore, *, public_url: str, incident_id: int | str, hub_id: str,
                            ttl_s: float, now: datetime | None = None) -> ClipUploadGrant:  # fmt: skip
    """Store a grant for `hub_id` to upload clips of `incident_id` for `ttl_s`; return URL and token."""
    expires = (now or datetime.now(UTC)) + timedelta(seconds=ttl_s)
    token = await links.create(Link(str(incident_id), CLIP_UPLOAD_KIND, hub_id, expires))
    return ClipUploadGrant(clip_upload_url(public_url, incident_id), token, expires)


@dataclass(frozen=True, slots=True)
class ClipGrants:
    """Adds an upload grant to the incident context the hub bridge sends (serve wires it in)."""

    links: LinkStore
    public_url: str
    ttl_s: float

    async def __call__(self, ctx: IncidentContext, hub_id: str) -> IncidentContext:
        grant = await issue_clip_upload(
            self.links, public_url=self.public_url, incident_id=ctx.incident, hub_id=hub_id, ttl_s=self.ttl_s
        )
        return dataclasses.replace(ctx, upload_url=grant.url, upload_token=grant.token)
