#!/usr/bin/env bash
# One command to see voip-sos work on this machine: sets everything up, then runs the whole flow
# (scripts/demo.py): Kamailio as the PBX, baresip as the emergency centre and as a family member,
# SIPp as the SMS centre, `voip-sos serve`, an STB pressing SOS, the centre confirming with key 1,
# the SMS texts, the voice link and the incident's timeline. Needs no standard input; finishes by
# itself in under three minutes after set-up; stops everything it started (also on failure or
# Ctrl-C); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The demo runs in the background so that a SIGTERM/SIGINT to this script reaches it by its PID;
# it stops its own peers (Kamailio, baresip, SIPp, serve) by PID before it exits.
pid=""
stop() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi; }
trap 'stop; exit 130' INT TERM
trap 'stop' EXIT
.venv/bin/python scripts/demo.py </dev/null &
pid=$!
rc=0
wait "$pid" || rc=$?
pid=""
exit "$rc"
