#!/usr/bin/env bash
# Installs scope-relay into ./.venv. Idempotent: re-running only installs what is missing.
#   scripts/setup.sh             everything: runtime, the cloud app (torch) and the test tools
#   scripts/setup.sh --system    the same, plus Debian packages for the browser, TURN, loss-lab and
#                                output tests (GStreamer's webrtcbin as a WHEP/WHIP client, ffprobe),
#                                the loss lab's NetfilterQueue (the `lab` extra, built against them)
#                                and the NDI output's binding (the `ndi` extra: its wheel ships the
#                                NDI runtime, under NDI's licence, docs/outputs.md)
#   scripts/setup.sh --runtime   only what the demo runs (no pytest, Playwright, ruff, mypy...)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="cloud,dev"
case "${1:-}" in
  --runtime) extras="cloud" ;;
  --system)
    extras="cloud,dev,lab,ndi"
    need=()
    [[ -x /usr/bin/chromium ]] || need+=(chromium chromium-driver)
    command -v turnserver >/dev/null || need+=(coturn)
    # the loss lab (tests/helpers/losslab.py): iptables NFQUEUE + the NetfilterQueue package,
    # which pip builds against libnetfilter-queue
    command -v iptables >/dev/null || need+=(iptables)
    dpkg -s libnetfilter-queue-dev >/dev/null 2>&1 || need+=(libnetfilter-queue-dev)
    command -v cc >/dev/null || need+=(gcc)
    # the outputs' real clients (tests/integration/test_outputs_*.py): GStreamer's webrtcbin
    # through the system python3 (gi), and Debian's ffprobe on the MPEG-TS URL
    for pkg in gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
               gstreamer1.0-nice gstreamer1.0-tools python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 ffmpeg; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if ((${#need[@]})); then
      SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
      echo "installing Debian packages: ${need[*]}"
      $SUDO apt-get update -q
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
    ;;
esac

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
# one stamp per set: a runtime-only .venv (from the demo) still gets the test tools later,
# and a fresh stamp of a larger set (cloud-dev-lab) covers a smaller one (cloud, cloud-dev)
stamp=".venv/.installed-${extras//,/-}"
covered() {
  local have
  for have in .venv/.installed-*; do
    [[ -f $have && ! pyproject.toml -nt $have && ! constraints.txt -nt $have ]] || continue
    have="-${have#.venv/.installed-}-"
    local extra missing=""
    for extra in ${extras//,/ }; do [[ $have == *"-$extra-"* ]] || missing=1; done
    [[ -z $missing ]] && return 0
  done
  return 1
}
if ! covered; then
  # pip's and the build backend's chatter goes to a log, shown only if the install fails:
  # the start-up output then ends with the page URL, nothing above it but our own lines
  echo "setting up .venv (${extras}); the first time takes a few minutes"
  log=.venv/setup.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed (log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
