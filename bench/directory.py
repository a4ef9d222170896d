"""Directory benchmark: CSV import rate and SOS lookup latency (issue 3).

Generates ROWS subscribers (one STB, two contacts each), imports them with the real
`voip-sos directory import` command into a fresh SQLite file, then times LOOKUPS lookups of random
STB IPs (10 % unknown) through Directory.lookup_stb, the path the backend takes on an SOS.

    python -m bench.directory [--rows 1000000] [--lookups 100000]

Last line: one JSON object with rows, import_rows_per_s, lookup_p50_ms, lookup_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voip_sos.directory import Directory

TARGET_IMPORT_ROWS_PER_S = 20_000
TARGET_LOOKUP_P99_MS = 1.0


def ip_of(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["uid", "name", "language", "address", "building", "unit", "floor", "room", "stb_ip", "contacts"]
        )
        for i in range(rows):
            w.writerow(
                [
                    f"U{i:07d}",
                    f"Subscriber {i}",
                    "en" if i % 3 else "zh",
                    f"{i % 999 + 1} Garden Road, Haidian District, Beijing",
                    str(i % 20 + 1),
                    str(i % 4 + 1),
                    str(i % 30 + 1),
                    str(i % 9000 + 100),
                    ip_of(i),
                    f"Son=+86138{i:08d};Daughter=+86139{i:08d}",
                ]
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def time_lookups(url: str, rows: int, lookups: int) -> tuple[list[float], int]:
    rng = random.Random(7)
    d = await Directory.open(url)
    found = 0
    samples: list[float] = []
    try:
        for _ in range(lookups):
            known = rng.random() >= 0.10
            ip = ip_of(rng.randrange(rows)) if known else f"172.16.{rng.randrange(256)}.{rng.randrange(256)}"
            t0 = time.perf_counter()
            match = await d.lookup_stb(ip)
            samples.append((time.perf_counter() - t0) * 1000)
            found += match is not None
    finally:
        await d.close()
    return samples, found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as tmp:
        work = Path(tmp)
        csv_path = work / "subscribers.csv"
        write_csv(csv_path, args.rows)
        cfg = work / "config.yaml"
        cfg.write_text("directory:\n  url: sqlite+aiosqlite:///directory.db\n", encoding="utf-8")
        cli = Path(sys.executable).with_name("voip-sos")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(cli), "--config", str(cfg), "directory", "import", str(csv_path), "--json"],
            capture_output=True, text=True, env={**os.environ}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        import_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"import failed with exit code {proc.returncode}")
        added = json.loads(proc.stdout)["added"]
        if added != args.rows:
            raise SystemExit(f"import added {added} of {args.rows} rows")
        samples, found = asyncio.run(
            time_lookups(f"sqlite+aiosqlite:///{work / 'directory.db'}", args.rows, args.lookups)
        )
    result = {
        "rows": args.rows,
        "import_rows_per_s": round(args.rows / import_s),
        "lookup_p50_ms": round(percentile(samples, 50), 4),
        "lookup_p99_ms": round(percentile(samples, 99), 4),
    }
    print(f"{'figure':<22}{'value':>14}{'target':>14}")
    print(f"{'rows':<22}{args.rows:>14,}{'':>14}")
    print(f"{'import seconds':<22}{import_s:>14.1f}{'':>14}")
    import_target = f">= {TARGET_IMPORT_ROWS_PER_S:,}"
    print(f"{'import rows/s':<22}{result['import_rows_per_s']:>14,}{import_target:>14}")
    print(f"{'lookups':<22}{len(samples):>14,}{'':>14}")
    print(f"{'found (90 % known)':<22}{found:>14,}{'':>14}")
    print(f"{'lookup p50 ms':<22}{result['lookup_p50_ms']:>14}{'':>14}")
    print(f"{'lookup p99 ms':<22}{result['lookup_p99_ms']:>14}{'<= ' + str(TARGET_LOOKUP_P99_MS):>14}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
