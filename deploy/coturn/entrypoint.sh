#!/bin/sh
# Starts coturn with scope-relay's peer rules and the TURN secret read from a file, so the
# secret never appears on a command line (ps, docker inspect, the pod spec). The options
# given to this script go to turnserver as they are.
#
#   TURN_SECRET_FILE   the shared secret (default /run/secrets/turn_secret); letters and digits
#   TURN_PEER_RULES    the peer rules (default: peer-rules.conf beside this script)
#   TURN_RUNTIME_DIR   a writable directory for the config file made here (default /tmp)
#   TURN_PRIVATE_IP    set (Kubernetes: the node's address): --external-ip=<detected public>/<it>,
#                      the public address asked of the coturn image's detect-external-ip
set -eu
here=$(dirname "$0")
secret_file=${TURN_SECRET_FILE:-/run/secrets/turn_secret}
rules=${TURN_PEER_RULES:-$here/peer-rules.conf}
umask 077
config=$(mktemp "${TURN_RUNTIME_DIR:-/tmp}/turnserver.XXXXXX")
secret=$(cat "$secret_file")
[ -n "$secret" ] || { echo "coturn: $secret_file is empty" >&2; exit 2; }
# printf is a shell builtin: the secret is written without passing through any argv
{ cat "$rules"; printf 'static-auth-secret=%s\n' "$secret"; } > "$config"
unset secret
if [ -n "${TURN_PRIVATE_IP:-}" ]; then
    set -- "$@" "--external-ip=$(detect-external-ip)/$TURN_PRIVATE_IP"
fi
exec turnserver -c "$config" "$@"
