"""The backend's HTTP side: expiring links, the link server, the family page, operator endpoints."""

from voip_sos.web.family import CodesSource, FamilyPages, Revoker, RevokeResult, issue_family_link
from voip_sos.web.family_state import Codes
from voip_sos.web.link_store import DbLinkStore
from voip_sos.web.links import (
    Link,
    LinkStore,
    family_url,
    issue_voice_link,
    link_url,
    new_token,
    token_hash,
)
from voip_sos.web.runner import HttpServers, start_http
from voip_sos.web.server import HealthCheck, build_app, build_operator_app

__all__ = [
    "Codes",
    "CodesSource",
    "DbLinkStore",
    "FamilyPages",
    "HealthCheck",
    "HttpServers",
    "Link",
    "LinkStore",
    "RevokeResult",
    "Revoker",
    "build_app",
    "build_operator_app",
    "family_url",
    "issue_family_link",
    "issue_voice_link",
    "link_url",
    "new_token",
    "start_http",
    "token_hash",
]
