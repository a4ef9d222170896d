"""Render workers end with the service, even when the service is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import asyncio, sys
from voip_sos.config import load_config
from voip_sos.voice.service import PromptService
from voip_sos.voice.render import worker_pid

async def main() -> None:
    cfg = load_config(None, {"VOIP_SOS_VOICE_CACHE_DIR": sys.argv[1]})
    svc = PromptService(cfg)
    await svc.start()
    loop = asyncio.get_running_loop()
    pids = {await loop.run_in_executor(svc._urgent, worker_pid) for _ in range(8)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    await asyncio.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, PID 1 here, reaps it).
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[-1].split()[0] != "Z"


def test_workers_die_when_the_service_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(SCRIPT, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert pids and all(_alive(p) for p in pids), line
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "render workers outlived the killed service"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
