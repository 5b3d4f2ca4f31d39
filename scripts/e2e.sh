#!/usr/bin/env bash
# End-to-end check of the cloud app that SCOPE_CLOUD_APP_ID (or SCOPE_CLOUD_WS_URL) names,
# wherever it runs: the real relay starts here, a receiver connects to it like the page, and
# flags, a tone and lip sync are checked (scripts/e2e_check.py; figures printed, non-zero exit
# on failure). SCOPE_CLOUD_BASE_URL and SCOPE_CLOUD_API_KEY are read as the relay reads them.
# For a cloud app on this machine also set SCOPE_RELAY_ICE_LOOPBACK=1; a hosted one needs
# nothing more. Arguments go to the check (--frequency HZ, --max-lip-sync-ms MS, --timeout S).
#   SCOPE_CLOUD_APP_ID=owner/scope-cloud SCOPE_CLOUD_API_KEY=... scripts/e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[[ -x $python ]] || python=python3
exec "$python" scripts/e2e_check.py "$@"
