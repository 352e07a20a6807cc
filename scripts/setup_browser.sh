#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the explorer's browser tests (tests/test_explore_browser.py).
# Idempotent: does nothing when `chromium` and `chromedriver` are already on PATH; otherwise installs
# Debian's `chromium` and `chromium-driver` with apt-get when it runs as root (or with passwordless sudo).
# Exits non-zero, saying why, when it cannot; the browser tests then skip with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: no apt-get here; install chromium and chromedriver yourself" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "setup_browser: not root and no passwordless sudo; run: sudo apt-get install chromium chromium-driver" >&2
  exit 1
fi
echo "setup_browser: installing chromium and chromium-driver (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
