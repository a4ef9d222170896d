"""CPU priorities: serve's emergency path above everything else, renders below it (needs root)."""

from __future__ import annotations

import os
import subprocess
import sys
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


@root_only
def test_a_render_worker_stays_below_a_serve_that_raised_its_priority() -> None:
    script = (
        "import os\n"
        "from voip_sos.priority import SERVE_NICE, set_nice\n"
        "from voip_sos.voice.render import worker_init\n"
        "assert set_nice(SERVE_NICE, 'serve') and os.getpriority(os.PRIO_PROCESS, 0) == SERVE_NICE\n"
        "worker_init(5, (), None, None)\n"  # no voices to load
        "print(os.getpriority(os.PRIO_PROCESS, 0))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"  # absolute: not -5 + 5 = 0


@root_only
async def test_serve_runs_its_emergency_path_at_raised_priority(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 1)
    serve = Serve(tmp_path, url)
    with serving(serve):
        assert serve.proc is not None
        kids = children(serve.proc.pid)
        listener = [pid for cmd, pid in kids.items() if "listener_process" in cmd]
        media = [pid for cmd, pid in kids.items() if "media_process" in cmd]
        assert len(listener) == 1 and len(media) == 1, kids
        assert nice_of(serve.proc.pid) == -5
        assert nice_of(listener[0]) == -10 and nice_of(media[0]) == -10


def test_a_process_not_allowed_to_raise_its_priority_says_so_and_runs_on() -> None:
    script = (
        "import logging, os, sys\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO,\n"
        "                    format='%(message)s part=%(part)s nice=%(nice)s wanted=%(wanted)s')\n"
        "from voip_sos.priority import SERVE_NICE, set_nice\n"
        "if os.geteuid() == 0:\n"
        "    os.setuid(65534)  # nobody: no CAP_SYS_NICE\n"
        "print(set_nice(SERVE_NICE, 'serve'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    line = f"part=serve nice={os.getpriority(os.PRIO_PROCESS, 0)} wanted=-5"  # nice: what it inherited
    assert f"CPU priority not raised (needs root or CAP_SYS_NICE) {line}" in out.stderr
