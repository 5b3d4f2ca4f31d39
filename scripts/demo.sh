#!/usr/bin/env bash
# The demo: embedded cloud app on 127.0.0.1 + local relay + page (http://127.0.0.1:8000/).
# Sets up only what the demo runs (scripts/test.sh adds the test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --runtime
exec .venv/bin/scope-relay demo "$@"
