#!/usr/bin/env bash
# One command to see voip-sos work on this machine: sets everything up, then runs the demo in a
# temporary folder and cleans it away. Needs no standard input; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

VOIP_SOS="$PWD/.venv/bin/voip-sos"
work="$(mktemp -d -t voip-sos-demo.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<'YAML'
directory:
  url: sqlite+aiosqlite:///demo.db
voice:
  language: en
YAML
sos() { "$VOIP_SOS" --config "$work/config.yaml" "$@"; }
if [ -t 1 ]; then step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else step() { printf '\n== %s\n' "$*"; }; fi

step "Provision two subscribers from the command line"
sos directory add --uid U1001 --name "Wang Fang" --language zh --stb-ip 127.0.0.23 \
  --address "12 Garden Road, Haidian District, Beijing" --building 3 --unit 2 --floor 5 --room 502 \
  --notes "Type 2 diabetes; insulin in the fridge" \
  --contact "Son=+8613800000001" --contact "Daughter=+8613900000002" \
  --stb-secret 00112233445566778899aabbccddeeff
sos directory add --uid U1002 --name "Mary O'Brien" --stb-ip 127.0.0.24 \
  --address "7 Elm Street, Springfield" --contact "Tom=+15550100"

step "Import a CRM export (GB18030, one bad row)"
printf '%s\r\n' \
  "uid,name,language,address,building,unit,floor,room,stb_ip,contacts" \
  "C2001,张伟,zh,上海市浦东新区世纪大道100号,5,1,12,1201,127.0.0.31,儿子=+8613800000011;老伴=13900000012" \
  "C2002,李秀英,zh,广州市天河区体育西路1号,,,,,127.0.0.32,女儿=+8613700000013" \
  "C2003,Bad Row,en,Nowhere,,,,,10.0.0.300,Nobody=+15550199" \
  | iconv -f utf-8 -t gb18030 > "$work/crm.csv"
rc=0
sos directory import "$work/crm.csv" || rc=$?
echo "(exit code $rc: one row was rejected, the good ones were applied)"
[ "$rc" -eq 1 ]

step "An SOS arrives from 127.0.0.31: who and where?"
time_start=$(date +%s%N)
sos directory lookup 127.0.0.31
echo "(lookup command took $(( ($(date +%s%N) - time_start) / 1000000 )) ms including process start)"

step "The same record as JSON (docs/cli-json.md)"
sos directory lookup 127.0.0.23 --json

step "Unknown STB"
sos directory lookup 10.1.2.3 || echo "(exit code $?: nobody is called for an unknown STB)"

step "All subscribers"
sos directory list
echo
echo "demo finished"
