"""One private anonymous Mosquitto for the whole hub test session (no shared-broker state)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub import hub_support
from tests.hub.broker import mosquitto


@pytest.fixture(scope="session", autouse=True)
def hub_broker() -> Iterator[int]:
    with mosquitto() as port:
        hub_support.use_broker(port)
        yield port
