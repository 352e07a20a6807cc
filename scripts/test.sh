#!/usr/bin/env bash
# Quick start, tests: set up .venv with the test extras (diffusers is a test-only reference), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
