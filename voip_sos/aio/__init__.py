"""asyncio adapters: sockets, the loop clock and timers around the sans-IO protocol cores."""
