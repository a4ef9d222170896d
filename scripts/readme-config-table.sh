#!/usr/bin/env bash
# Regenerate the configuration table in README.md from the schema (voip_sos/config.py).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
from pathlib import Path
from voip_sos.config import markdown_table
readme = Path("README.md")
text = readme.read_text(encoding="utf-8")
start = text.index("| key | type | unit | default | meaning |")
end = text.index("\n\n", start)
readme.write_text(text[:start] + markdown_table() + text[end:], encoding="utf-8")
PY
