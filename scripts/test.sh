#!/usr/bin/env bash
# Quick start, tests: set up .venv with the test extras (diffusers is a test-only reference), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# headless Chromium for the explorer's browser tests; without it they skip and say why
bash scripts/setup_browser.sh || echo "scripts/setup_browser.sh failed: the browser tests will skip" >&2
exec .venv/bin/python -m pytest -q "$@"
