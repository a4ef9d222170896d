#!/usr/bin/env bash
# Set everything up, then run lint, type check and every test. Non-zero on any failure, including
# pytest finding no tests (exit 5). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/ensure-postgres.sh

echo "== ruff"
.venv/bin/ruff check voip_sos tests bench
echo "== mypy --strict voip_sos"
.venv/bin/mypy --strict voip_sos
echo "== pytest"
rc=0
.venv/bin/pytest "$@" </dev/null || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
