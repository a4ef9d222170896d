"""Incidents: what happens after an SOS is accepted. `store` is the durable record and audit log."""

from voip_sos.incidents.store import (
    EventRecord,
    Incident,
    IncidentEvent,
    IncidentStore,
    Recorded,
    RequestRecord,
)

__all__ = ["EventRecord", "Incident", "IncidentEvent", "IncidentStore", "Recorded", "RequestRecord"]
