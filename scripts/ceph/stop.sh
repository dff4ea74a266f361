#!/usr/bin/env bash
# ceph/stop.sh DIR [--keep]: stops exactly the daemons that ceph/start.sh
# recorded in DIR/pids, newest first (if the mon went first, the OSD would wait
# 5 s for its mark-me-down ack): SIGTERM, then SIGKILL after a grace period. A
# PID whose command line no longer names DIR/ceph.conf is not ours any more and
# is left alone. Removes DIR afterwards unless --keep. Idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=ceph
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

DIR=${1:?usage: ceph/stop.sh DIR [--keep]}
KEEP=${2:-}
[[ -d $DIR ]] || exit 0
DIR=$(cd "$DIR" && pwd)
n=0
if [[ -f $DIR/pids ]]; then
  mapfile -t lines < <(tac "$DIR/pids")
  for l in "${lines[@]}"; do
    read -r pid name <<<"$l"
    if pid_alive "$pid" "$DIR/ceph.conf"; then
      stop_pid "$pid" "$DIR/ceph.conf" "${CEPH_STOP_GRACE:-10}"
      n=$((n + 1))
      log "stopped $name (pid $pid)"
    fi
  done
  : >"$DIR/pids"
fi
if [[ $KEEP != --keep ]]; then
  rm -rf -- "$DIR"
fi
log "stopped $n daemon(s)"
