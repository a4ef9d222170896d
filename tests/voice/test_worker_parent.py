"""A render worker whose service is gone by the time the worker starts must not stay behind."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import os, sys, time
from voip_sos.voice.render import die_with_parent
die_with_parent(int(sys.argv[1]))
time.sleep(3)
print("still here")
"""


def run(parent: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(parent)], capture_output=True, text=True, timeout=30
    )


def test_worker_whose_service_already_left_ends_at_once() -> None:
    # The service that made the pool (this pid is nobody's parent of the child) has gone already.
    done = run(parent=2**22 + 12345)
    assert done.returncode == 0
    assert "still here" not in done.stdout


def test_worker_of_a_living_service_keeps_working() -> None:
    done = run(parent=os.getpid())
    assert "still here" in done.stdout
