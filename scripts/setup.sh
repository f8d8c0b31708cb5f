#!/usr/bin/env bash
# Sets up a development/demo environment: a venv in .venv with treadctl installed
# (editable, with test extras) and the mosquitto broker the MQTT tests start themselves.
# Safe to re-run; quiet when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    for py in python3.11 python3.12 python3.13 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    echo "setup: Python >= 3.11 is required (apt-get install python3 python3-venv)" >&2
    return 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "setup: installing mosquitto (MQTT broker used by the daemon tests)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

# Debian's Chromium for the dashboard's browser tests (driven by Playwright; never
# `playwright install`): a missing browser fails those tests, so install it here.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "setup: installing chromium + chromium-driver (the dashboard's browser tests)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

PY=$(pick_python)
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PY" >&2
    "$PY" -m venv .venv || {
        echo "setup: venv failed; on Debian install python3-venv" >&2; exit 1; }
fi
stamp=.venv/.treadctl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing treadctl and its dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
