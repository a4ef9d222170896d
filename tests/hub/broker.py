"""A private Mosquitto for the hub tests and benchmark: started on a free loopback port, stopped by PID."""

from __future__ import annotations

import contextlib
import getpass
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(
    *,
    users: dict[str, str] | None = None,
    acl: str | None = None,
    folder: Path | None = None,
    port: int | None = None,
) -> Iterator[int]:
    """Run `mosquitto -c CONF` on a free port; anonymous unless `users` (then with `acl`). Yields the port."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        base = Path(tmp)
        port = port or free_port()
        # set_tcp_nodelay as docs/hub-protocol.md §8 recommends (Nagle costs ~40 ms per MQTT hop).
        lines = [f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", "set_tcp_nodelay true"]
        # Started as root, mosquitto would switch to user "mosquitto", who cannot read our files.
        lines.append(f"user {getpass.getuser()}")
        if users:
            passwd = base / "passwd"
            for i, (user, pw) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run(
                    ["mosquitto_passwd", *flags, str(passwd), user, pw], check=True, capture_output=True
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if acl is not None:
                (base / "acl").write_text(acl, encoding="utf-8")
                lines.append(f"acl_file {base / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        conf = base / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 5
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start within 5 s")
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
