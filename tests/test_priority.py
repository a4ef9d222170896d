"""CPU priorities: serve's emergency path above everything else, renders below it (needs root)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sos.test_sos_serve import Serve, _provisioned, serving

ROOT = Path(__file__).resolve().parents[1]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="raising priority needs root or CAP_SYS_NICE")


def nice_of(pid: int) -> int:
    # /proc/PID/stat field 19 is the nice value; the command name (field 2) may hold spaces.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def children(pid: int) -> dict[str, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out[cmd] = int(entry.name)
    return out


def policy_of(pid: int) -> tuple[int, int]:
    """(scheduling policy, real-time priority) of a process's main thread."""
    return os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority


@root_only
def test_a_render_worker_leaves_the_real_time_class_and_stays_below_serve() -> None:
    script = (
        "import os\n"
        "from voip_sos.priority import SERVE_NICE, SERVE_RT, raise_priority\n"
        "from voip_sos.voice.render import worker_init\n"
        "assert raise_priority('serve', nice=SERVE_NICE, realtime=SERVE_RT) == 'realtime'\n"
        "assert os.getpriority(os.PRIO_PROCESS, 0) == SERVE_NICE\n"
        "worker_init(5, (), None, None)\n"  # no voices to load
        "print(os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0) == os.SCHED_OTHER)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5", "True"]  # nice absolute, not -5 + 5 = 0; not real time


def serve_parts(serve: Serve) -> tuple[int, int, int]:
    assert serve.proc is not None
    kids = children(serve.proc.pid)
    listener = [pid for cmd, pid in kids.items() if "listener_process" in cmd]
    media = [pid for cmd, pid in kids.items() if "media_process" in cmd]
    assert len(listener) == 1 and len(media) == 1, kids
    return serve.proc.pid, listener[0], media[0]


@root_only
async def test_with_realtime_on_serve_runs_its_emergency_path_in_the_real_time_class(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 1)
    serve = Serve(tmp_path, url, sos_extra="  realtime: true\n")
    with serving(serve):
        main, listener, media = serve_parts(serve)
        assert policy_of(main) == (os.SCHED_RR, 10)
        assert policy_of(listener) == (os.SCHED_RR, 20) and policy_of(media) == (os.SCHED_RR, 20)
        # The nice values too: what the threads fall back to should real time be taken away.
        assert nice_of(main) == -5 and nice_of(listener) == -10 and nice_of(media) == -10
        deadline = time.monotonic() + 20
        while "voip-sos ready" not in (log := serve.log.read_text(encoding="utf-8")):
            assert time.monotonic() < deadline, log
            await asyncio.sleep(0.1)
        assert "cpu_priority=realtime" in log


@root_only
async def test_by_default_serve_runs_time_shared_at_raised_nice_values(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 1)
    serve = Serve(tmp_path, url)
    with serving(serve):
        main, listener, media = serve_parts(serve)
        assert {policy_of(pid)[0] for pid in (main, listener, media)} == {os.SCHED_OTHER}
        assert nice_of(main) == -5 and nice_of(listener) == -10 and nice_of(media) == -10


def test_a_process_not_allowed_to_raise_its_priority_says_so_and_runs_on() -> None:
    script = (
        "import logging, os, sys\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO,\n"
        "                    format='%(message)s part=%(part)s wanted=%(wanted)s')\n"
        "from voip_sos.priority import SERVE_NICE, SERVE_RT, raise_priority\n"
        "if os.geteuid() == 0:\n"
        "    os.setuid(65534)  # nobody: no CAP_SYS_NICE\n"
        "print(raise_priority('serve', nice=SERVE_NICE, realtime=SERVE_RT), os.sched_getscheduler(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["normal", str(os.SCHED_OTHER)]
    assert "CPU priority not raised (needs root or CAP_SYS_NICE) part=serve wanted=-5" in out.stderr
    assert "real-time CPU priority refused" in out.stderr and "part=serve wanted=10" in out.stderr
