#!/usr/bin/env bash
# kube/stop.sh DIR: stops the kube-apiserver and etcd that start.sh DIR
# started (by the PIDs in DIR/pids, each checked to still run with DIR in its
# command line), then removes DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=kube
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

[[ $# == 1 ]] || die "usage: stop.sh DIR"
STATE=$(cd "$1" 2>/dev/null && pwd) || {
  log "$1 does not exist: nothing to stop"
  exit 0
}
if [[ -f $STATE/pids ]]; then
  # the API server first, so that it never sees etcd go away under it
  for name in kube-apiserver etcd; do
    while read -r pid n; do
      [[ $n == "$name" ]] && stop_pid "$pid" "$STATE/" 10
    done <"$STATE/pids"
  done
fi
rm -rf -- "$STATE"
