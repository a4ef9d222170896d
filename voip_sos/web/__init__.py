"""The backend's HTTP side: expiring links, the link server, operator endpoints."""

from voip_sos.web.link_store import DbLinkStore
from voip_sos.web.links import Link, LinkStore, issue_voice_link, link_url, new_token, token_hash
from voip_sos.web.runner import HttpServers, start_http
from voip_sos.web.server import HealthCheck, build_app, build_operator_app

__all__ = [
    "DbLinkStore",
    "HealthCheck",
    "HttpServers",
    "Link",
    "LinkStore",
    "build_app",
    "build_operator_app",
    "issue_voice_link",
    "link_url",
    "new_token",
    "start_http",
    "token_hash",
]
