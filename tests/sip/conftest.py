"""Shared helpers for the SIP tests: a hypothesis profile for the 10,000-example fuzz runs."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "sip-fuzz",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
