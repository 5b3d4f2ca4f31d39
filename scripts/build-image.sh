#!/usr/bin/env bash
# Builds the cloud app's container image (deploy/Dockerfile) and, with --smoke, runs it and asks
# /health and /ready. Podman is preferred (Debian: apt-get install podman buildah mmdebstrap runc);
# docker works for a plain build.
#
#   scripts/build-image.sh                       # CPU image, base debian:bookworm-slim from a registry
#   scripts/build-image.sh --local-base --smoke  # no registry: base made here by mmdebstrap
#   scripts/build-image.sh --local-base --local-wheels /opt/wheels --smoke
#                                                # + torch from a local wheel folder (local-only
#                                                #   option: podman bind-mounts it into the build)
#   scripts/build-image.sh --tag scope-relay-cloud:cuda -- \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 \
#       --build-arg TORCH_SPEC='torch==2.5.1'    # CUDA (arguments after -- go to `build`)
#
# Options:
#   --local-base          mmdebstrap a Debian bookworm minbase (python3, python3-venv, ca-certificates)
#                         from the apt mirror this machine uses and import it as $LOCAL_BASE
#                         (default localhost/debian:bookworm-slim); build FROM it.
#   --local-wheels DIR    search DIR for wheels too (EXTRA_FIND_LINKS) instead of PyTorch's CPU index;
#                         e.g. a folder holding torch-2.13.0+cpu-cp311-*.whl. Podman only.
#   --ca-bundle FILE      CA bundle for pip inside the build (a TLS-inspecting proxy, e.g. this
#                         machine's /etc/ssl/certs/ca-certificates.crt); bind-mounted, not kept. Podman only.
#   --tag NAME            image name (default scope-relay-cloud:latest)
#   --smoke               run the image on 127.0.0.1 (host network, a free port), check /health and
#                         /ready answer 200, the user is not root, the HEALTHCHECK passes, and that
#                         SIGTERM stops it with exit code 0; then remove the container.
#   --mirror URL          Debian mirror for --local-base (default: the first URIs: in
#                         /etc/apt/sources.list.d/debian.sources, else http://deb.debian.org/debian)
#
# Environment: ENGINE=podman|docker. Sandboxes without CAP_SYS_RESOURCE or with hybrid cgroups (v1
# plus v2 controllers) are detected: rlimits are capped to this shell's hard limits, and runc is used
# where crun refuses ("cgroups in hybrid mode not supported").
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=scope-relay-cloud:latest
LOCAL_BASE=${LOCAL_BASE:-localhost/debian:bookworm-slim}
local_base=0 smoke=0 wheels="" mirror="" ca_bundle=""
extra=()
while (($#)); do
  case "$1" in
    --local-base) local_base=1 ;;
    --local-wheels) wheels=$(realpath "$2"); shift ;;
    --ca-bundle) ca_bundle=$(realpath "$2"); shift ;;
    --tag) TAG=$2; shift ;;
    --smoke) smoke=1 ;;
    --mirror) mirror=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
engine=("$ENGINE")
tmpfiles=() container=""
on_exit() {
  if [[ -n $container ]]; then "${engine[@]}" rm -f "$container" >/dev/null 2>&1 || true; fi
  if ((${#tmpfiles[@]})); then rm -f "${tmpfiles[@]}"; fi
}
trap on_exit EXIT
run_opts=()
build_opts=()
if [[ $ENGINE == podman ]]; then
  # crun cannot run under hybrid cgroups with controllers left on the v2 hierarchy; runc can.
  # `podman build` has no --runtime flag, so say it in a containers.conf of our own.
  if [[ -n $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null) && -z ${CONTAINERS_CONF:-} ]] \
      && command -v runc >/dev/null; then
    CONTAINERS_CONF=$(mktemp --suffix=.conf)
    printf '[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
    export CONTAINERS_CONF
    tmpfiles+=("$CONTAINERS_CONF")
    echo "hybrid cgroups: using runc ($CONTAINERS_CONF)"
  fi
  # podman's default rlimits (nofile 1048576) fail where raising them is not allowed.
  hard_nofile=$(ulimit -Hn)
  if [[ $hard_nofile != unlimited && $hard_nofile -lt 1048576 ]]; then
    run_opts+=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit nproc=32768:32768)
  fi
  build_opts+=(--format docker "${run_opts[@]}")  # docker format keeps HEALTHCHECK
fi

if ((local_base)); then
  if [[ -z $mirror ]]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
  fi
  tarball=$(mktemp --suffix=.tar)
  tmpfiles+=("$tarball")
  echo "== mmdebstrap bookworm from $mirror"
  nice -n 10 mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$tarball" "$mirror"
  "${engine[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE"
  rm -f "$tarball"
  build_opts+=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
fi

if [[ -n $wheels ]]; then
  [[ $ENGINE == podman ]] || { echo "--local-wheels needs podman (bind mounts in build)" >&2; exit 2; }
  build_opts+=(-v "$wheels:/wheels:ro" --build-arg EXTRA_FIND_LINKS=/wheels --build-arg TORCH_INDEX_URL=)
fi

if [[ -n $ca_bundle ]]; then
  [[ $ENGINE == podman ]] || { echo "--ca-bundle needs podman (bind mounts in build)" >&2; exit 2; }
  build_opts+=(-v "$ca_bundle:/run/build-ca.crt:ro" --build-arg PIP_CERT_FILE=/run/build-ca.crt)
fi

echo "== build $TAG"
start=$(date +%s)
nice -n 10 "${engine[@]}" build --network=host -f deploy/Dockerfile -t "$TAG" \
  "${build_opts[@]}" "${extra[@]}" .
echo "built $TAG in $(($(date +%s) - start)) s"
"${engine[@]}" image ls "$TAG"

((smoke)) || exit 0

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name=scope-relay-smoke-$$
echo "== smoke: $name on 127.0.0.1:$port"
container=$name
"${engine[@]}" run -d --name "$name" --network=host "${run_opts[@]}" \
  -e "SCOPE_HEALTH_URL=http://127.0.0.1:$port/health" "$TAG" --host 127.0.0.1 --port "$port" >/dev/null

get() {  # URL -> prints "status body"
  python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, e)
EOF
}

for _ in $(seq 60); do
  [[ $(get "http://127.0.0.1:$port/health") == 200* ]] && break
  sleep 1
done
health=$(get "http://127.0.0.1:$port/health"); echo "/health -> $health"
ready=$(get "http://127.0.0.1:$port/ready"); echo "/ready  -> $ready"
uid=$("${engine[@]}" exec "$name" id -u); echo "uid in container: $uid"
hc=ok
if [[ $ENGINE == podman ]]; then
  "${engine[@]}" healthcheck run "$name" >/dev/null || hc=failed
  echo "HEALTHCHECK: $hc"
fi
"${engine[@]}" stop -t 30 "$name" >/dev/null
code=$("${engine[@]}" inspect --format '{{.State.ExitCode}}' "$name")
echo "exit code after SIGTERM: $code"
"${engine[@]}" logs "$name" 2>&1 | tail -n 5

[[ $health == 200* && $ready == 200* && $uid != 0 && $hc == ok && $code == 0 ]] \
  || { echo "smoke test FAILED" >&2; exit 1; }
echo "smoke test passed"
