"""SIP user agent core (RFC 3261 and friends), sans-IO: no sockets, no clock, no asyncio here."""
