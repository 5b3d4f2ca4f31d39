#!/usr/bin/env bash
# Installs everything scope-relay needs into ./.venv (and, with --system, Debian packages
# for the browser and TURN tests). Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--system" ]]; then
  need=()
  [[ -x /usr/bin/chromium ]] || need+=(chromium chromium-driver)
  command -v turnserver >/dev/null || need+=(coturn)
  if ((${#need[@]})); then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    echo "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
fi

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[cloud,dev]'
  touch "$stamp"
fi
