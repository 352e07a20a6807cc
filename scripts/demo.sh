#!/usr/bin/env bash
# Quick start, main job: set up .venv, then run the demo on scikit-learn's 8x8 digits
# (schedules, forward process, ~2 minutes of training, DDIM and DDPM samples, reverse trajectory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
exec .venv/bin/difflab demo --out demo_out "$@"
