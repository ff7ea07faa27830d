#!/usr/bin/env bash
# Set up a fresh machine and run every check: lint, unit tests, training tests, browser tests.
# Usage: scripts/test.sh   (from the project root; needs Python 3.11 and apt for Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
[ -x .venv/bin/python ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt

.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
