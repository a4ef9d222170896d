"""`voip-sos hub ...` as real processes: check, run (SIGTERM), instruct, revoke, status, restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import yaml

from tests.hub import hub_support
from tests.hub.broker import free_port
from tests.hub.hub_sims import Z2mLockSim
from tests.hub.hub_support import STB_KEY, unique

CLI = Path(sys.executable).with_name("voip-sos")


def run_cli(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOIP_SOS_", "VOIP_HUB_"))}
    return subprocess.run(
        [str(CLI), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


async def arun_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI without blocking the event loop (the lock simulator must keep answering meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOIP_SOS_", "VOIP_HUB_"))}
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, stdin=subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


def hub_yaml(tmp_path: Path, port: int, base_topic: str, hub_id: str) -> Path:
    broker = str(hub_support.BROKER)
    data = {
        "hub": {"id": hub_id, "listen": f"127.0.0.1:{port}", "stb_key": STB_KEY.hex(), "code_ttl_s": 600},
        "link": {"broker": broker},
        "lock": {"kind": "zigbee2mqtt", "broker": broker, "base_topic": base_topic, "slots": "30-31"},
        "log": {"format": "json"},
    }
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def start_hub(cfg: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOIP_SOS_", "VOIP_HUB_"))}
    proc = subprocess.Popen(
        [str(CLI), "hub", "run", "--hub-config", str(cfg)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, proc.stderr.read() if proc.stderr else line
    return proc


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def test_check_never_reads_config_yaml(tmp_path: Path) -> None:
    # A broken backend config.yaml in the folder must not matter to the hub.
    (tmp_path / "config.yaml").write_text("sip: [not, a, mapping\n", encoding="utf-8")
    example = Path(__file__).resolve().parents[2] / "hub.yaml"
    ok = run_cli("hub", "check", "--hub-config", str(example), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "hub config ok" in ok.stdout and "change-me" not in ok.stdout and "********" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub:\n  id: Hub_1\n", encoding="utf-8")
    res = run_cli("hub", "check", "--hub-config", str(bad), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines()[0].startswith("config error: hub.id: expected a hub id of a-z, 0-9 and")
    assert "(bad.yaml line 2)" in res.stderr.splitlines()[0]


async def test_run_instruct_revoke_status_and_restart(tmp_path: Path) -> None:
    hub_id, base_topic, port = unique("hub"), unique("z2m"), free_port()
    cfg = hub_yaml(tmp_path, port, base_topic, hub_id)
    broker = str(hub_support.BROKER)
    async with Z2mLockSim(base_topic, "front_door") as lock:
        proc = start_hub(cfg, tmp_path)
        try:
            res = await arun_cli(
                "hub",
                "instruct",
                f"127.0.0.1:{port}",
                "--key",
                STB_KEY.hex(),
                "--give-up",
                "10",
                cwd=tmp_path,
            )
            assert res.returncode == 0, res.stderr
            codes = json.loads(res.stdout)
            assert codes["door_state"] == "issued" and codes["parking_state"] == "not_configured"
            assert lock.temporary() == {30: codes["door_code"]}
            status = await arun_cli(
                "hub", "status", hub_id, "--broker", broker, "--timeout", "5", cwd=tmp_path
            )
            assert (status.returncode, status.stdout.strip()) == (0, "online")
        finally:
            assert stop(proc) == 0
        # Restarted: the code is still known (state file next to hub.yaml), and revoke clears it.
        assert (tmp_path / "var" / "hub-state.json").exists()
        offline = await arun_cli("hub", "status", hub_id, "--broker", broker, "--timeout", "5", cwd=tmp_path)
        assert (offline.returncode, offline.stdout.strip()) == (1, "offline")
        proc = start_hub(cfg, tmp_path)
        try:
            deadline = time.monotonic() + 10
            while True:  # the backend link comes up shortly after the socket
                res = await arun_cli(
                    "hub", "revoke", hub_id, "--broker", broker, "--timeout", "3", cwd=tmp_path
                )
                if res.returncode == 0 or time.monotonic() > deadline:
                    break
            assert res.returncode == 0, res.stderr
            assert json.loads(res.stdout) == {"hub": hub_id, "cleared": [30], "failed": []}
            assert lock.temporary() == {}
        finally:
            assert stop(proc) == 0
