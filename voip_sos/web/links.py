"""Unguessable, expiring links: the voice message in an SMS, later the family's page.

A token is 128 random bits (URL-safe base64, 22 characters). Only its SHA-256 is stored, so a
copy of the database does not hand out working links.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

__all__ = [
    "FAMILY_KIND",
    "FAMILY_PATH",
    "TOKEN_BYTES",
    "VOICE_PATH",
    "Link",
    "LinkStore",
    "family_url",
    "issue_voice_link",
    "link_url",
    "new_token",
    "token_hash",
]

TOKEN_BYTES = 16


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """What a token opens: one incident's voice message (kind "voice") or family page ("family")."""

    incident_id: str
    kind: str
    target: str
    """For "voice": the path of the WAV the call plays; for "family": the contact's key."""
    expires_at: datetime


class LinkStore(Protocol):
    async def create(self, link: Link) -> str:
        """Store a new link and return its token (the only time the token exists in clear)."""
        ...

    async def resolve(self, token: str, now: datetime) -> Link | None:
        """The link for a token that exists and has not expired, else None."""
        ...

    async def purge_expired(self, now: datetime) -> int:
        """Forget every link expired at `now`; return how many."""
        ...


VOICE_PATH = "/v/"
"""Where voice links live on the link server: `VOICE_PATH + token`."""


FAMILY_PATH = "/f/"
"""Where family pages live: `FAMILY_PATH + token`."""
FAMILY_KIND = "family"
"""Link kind of a family page; its target is the contact's party key ("contact:0")."""


def family_url(public_url: str, token: str) -> str:
    """The family page's URL for a contact's SMS: `public_url` + `/f/` + 22 characters."""
    return f"{public_url.rstrip('/')}{FAMILY_PATH}{token}"


def link_url(public_url: str, token: str) -> str:
    """The URL an SMS carries. No ".wav" suffix: every character costs SMS segment space."""
    return f"{public_url.rstrip('/')}{VOICE_PATH}{token}"


async def issue_voice_link(
    store: LinkStore, *, public_url: str, ttl_s: float, incident_id: str, wav: str, now: datetime
) -> str:
    """Store a voice link to `wav` that works for `ttl_s` from `now`; return its URL for the SMS."""
    token = await store.create(Link(incident_id, "voice", wav, now + timedelta(seconds=ttl_s)))
    return link_url(public_url, token)
