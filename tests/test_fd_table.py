"""Descriptor room made at start-up: the soft limit raised, the kernel's table grown, nothing clobbered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.sos.test_sos_serve import Serve, _provisioned, serving
from tests.test_priority import children
from voip_sos.fd_table import SPARE, fd_table_size

ROOT = Path(__file__).resolve().parents[1]


def run(limits: tuple[int, int], count: int) -> tuple[dict[str, object], str]:
    """reserve(count) in a fresh interpreter whose open-files limit starts at `limits`."""
    script = f"""
import json, logging, os, resource, sys
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s %(needed)s %(hard_limit)s")
resource.setrlimit(resource.RLIMIT_NOFILE, {limits!r})
from voip_sos.fd_table import fd_table_size, reserve
before = fd_table_size()
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
room = reserve({count}, "test")
for fd in held:
    os.fstat(fd)  # still open: reserve never lands on a descriptor in use
print(json.dumps({{"before": before, "after": fd_table_size(), "room": room,
                  "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "open": len(os.listdir("/proc/self/fd"))}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout), out.stderr


def test_reserve_raises_the_soft_limit_and_grows_the_table_without_leaving_descriptors_open() -> None:
    got, err = run((256, 8192), 4000)
    assert isinstance(got["before"], int) and got["before"] < 4000  # so the growth happens here
    assert got["room"] == 4000 and got["soft"] == 4000
    assert isinstance(got["after"], int) and got["after"] >= 4000
    assert isinstance(got["open"], int) and got["open"] < 40  # the probe descriptor was closed again
    assert "WARNING" not in err


def test_a_hard_limit_below_the_need_is_used_whole_and_named_in_a_warning() -> None:
    got, err = run((128, 512), 1000)
    assert got["room"] == 512 and got["soft"] == 512
    assert isinstance(got["after"], int) and got["after"] >= 512
    assert "WARNING open-files hard limit below what the RTP port range needs 1000 512" in err


def test_a_table_already_large_enough_is_left_alone() -> None:
    got, _ = run((4096, 4096), 32)
    assert got["room"] == 32 and got["soft"] == 4096 and got["after"] == got["before"]


async def test_serve_and_its_media_process_have_room_for_every_rtp_socket_from_the_start(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 1)
    serve = Serve(tmp_path, url)
    with serving(serve):  # serve's RTP range is 200 ports
        assert serve.proc is not None
        media = [pid for cmd, pid in children(serve.proc.pid).items() if "media_process" in cmd]
        assert len(media) == 1
        assert fd_table_size(serve.proc.pid) >= 200 + SPARE
        assert fd_table_size(media[0]) >= 200 + SPARE
