#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth and a database `test`.
# Where one already answers (as on the development machines), nothing is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { .venv/bin/python - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect(("127.0.0.1", 5432))
except OSError:
    sys.exit(1)
PY
}

if answers; then exit 0; fi
echo "ensure-postgres: no PostgreSQL on 127.0.0.1:5432; installing and starting Debian's postgresql"
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  apt-get update -q </dev/null
  apt-get install -y -q --no-install-recommends postgresql </dev/null
fi
ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
hba="/etc/postgresql/$ver/main/pg_hba.conf"
# Tests connect over loopback as `postgres` without a password, as on the development machines.
if ! grep -q "voip-sos tests" "$hba"; then
  sed -i '1i # voip-sos tests: trust on loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi
pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
for _ in $(seq 1 30); do answers && break; sleep 1; done
answers || { echo "ensure-postgres: PostgreSQL did not start" >&2; exit 1; }
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 \
  || su postgres -c "createdb test"
