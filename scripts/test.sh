#!/usr/bin/env bash
# The whole test suite (what CI runs): lint and type checks, then pytest. pytest's own exit
# status is returned, 5 (no tests ran) included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
scripts/lint.sh
exec .venv/bin/python -m pytest "$@"
