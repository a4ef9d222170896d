#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 with only Python: the Debian packages the project and its
# tests need (installed only when missing), a virtualenv in .venv, and the package with its test extra.
# Needs no standard input; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: real SIP peers for tests and the demo (sip-tester = SIPp, baresip, kamailio),
# espeak-ng (Mandarin fallback voice), sox (test audio), libsndfile1 (soundfile), python3-venv,
# chromium (headless browser for the family-page tests, driven by Playwright),
# fonts-wqy-microhei (a CJK font, so Chromium draws the Chinese page instead of empty boxes),
# mosquitto (MQTT broker + mosquitto_passwd: the home hub's tests start their own brokers),
# ffmpeg (the hub's camera buffer and clip cutter), and GStreamer's RTSP server with H.264 encoding
# run under Debian's python3-gi (the camera stand-in of the clip tests and benchmark), and tshark
# (bench/sos_e2e.py times press -> INVITE and answer -> RTP from one loopback capture).
APT_PACKAGES=(
  python3-venv sip-tester baresip-core kamailio espeak-ng sox libsndfile1 chromium
  fonts-wqy-microhei mosquitto ffmpeg python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly tshark
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q </dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python >= 3.11 is needed, $PYTHON is $("$PYTHON" -V 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip </dev/null
fi

# Reinstall only when the project's metadata changed since the last install.
stamp=.venv/.voip-sos-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import voip_sos' 2>/dev/null; then
  echo "setup: installing voip-sos and its test extra into .venv"
  .venv/bin/python -m pip install -q -e '.[test]' </dev/null
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/voip-sos)"
