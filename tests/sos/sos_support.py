"""Helpers shared by the SOS tests: STB addresses, secrets, provisioning a real directory."""

from __future__ import annotations

from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber


def stb_ip(n: int) -> str:
    """Distinct loopback addresses for STB number n: 127.0.1.1 upwards (127.0.0.x stay the backends')."""
    return f"127.{n // 62500}.{1 + (n // 250) % 250}.{1 + n % 250}"


def secret_of(n: int) -> bytes:
    return bytes([n & 0xFF, (n >> 8) & 0xFF]) * 16


async def provision(d: Directory, count: int, *, secrets: bool = True, first: int = 0) -> list[str]:
    """Add `count` subscribers, one STB each (with its own secret unless told otherwise)."""
    ips = []
    for n in range(first, first + count):
        ip = stb_ip(n)
        await d.add(
            Subscriber(
                uid=f"u{n:05d}",
                name=f"Subscriber {n}",
                language="en",
                address=Address(line=f"{n} Test Street"),
                contacts=(Contact("Child", "+8613800000000"),),
                stbs=(Stb(ip=ip, secret=secret_of(n) if secrets else None),),
            )
        )
        ips.append(ip)
    return ips
