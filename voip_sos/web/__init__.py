"""The backend's HTTP side: expiring links, the link server, operator endpoints."""

from voip_sos.web.links import Link, LinkStore, new_token, token_hash
from voip_sos.web.server import build_app, build_operator_app

__all__ = ["Link", "LinkStore", "build_app", "build_operator_app", "new_token", "token_hash"]
