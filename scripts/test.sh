#!/usr/bin/env bash
# The whole test suite (what CI runs). pytest's own exit status is returned, 5 included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
exec .venv/bin/python -m pytest "$@"
