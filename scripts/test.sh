#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (pass -m "not slow" to skip the integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFERKIT_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
