# lib.sh: helpers shared by the test-environment scripts. Source it, don't run it.
#
#   LOG_TAG=ceph; source "$(dirname "$0")/../lib.sh"
#
# Everything is logged to stderr; stdout is kept for what a script prints on
# purpose (export lines, status).

# shellcheck shell=bash

# Where scripts/testenv keeps its state (PID files, data dirs, the env file).
TESTENV_DIR=${CAIRN_TESTENV_DIR:-/tmp/cairn-testenv}

_lib_t0=$(date +%s.%N)

# log MSG...: a timestamped line on stderr, tagged with $LOG_TAG.
log() {
  printf '[%s %5.1fs] %s\n' "${LOG_TAG:-testenv}" \
    "$(awk -v s="$_lib_t0" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$*" >&2
}

# die MSG...: log an error and exit 1.
die() {
  log "ERROR: $*"
  exit 1
}

# elapsed T0: seconds since T0 (a `date +%s.%N` value), one decimal.
elapsed() {
  awk -v s="$1" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}'
}

APT_OPTS=(-o DPkg::Lock::Timeout=600 -o APT::Get::Assume-Yes=true -q)

# apt_update_once: `apt-get update` at most once per `scripts/testenv up`
# (the marker lives in $TESTENV_DIR, which `down` removes). Other sessions may
# be running apt at the same time: wait for the lock, retry a few times.
apt_update_once() {
  local marker=$TESTENV_DIR/.apt-updated i
  [[ -f $marker ]] && return 0
  mkdir -p "$TESTENV_DIR"
  for i in 1 2 3 4 5; do
    if apt-get "${APT_OPTS[@]}" update -qq >"$TESTENV_DIR/apt-update.log" 2>&1; then
      touch "$marker"
      return 0
    fi
    log "apt-get update failed (try $i/5, see $TESTENV_DIR/apt-update.log); retrying in 10s"
    sleep 10
  done
  die "apt-get update failed; log: $TESTENV_DIR/apt-update.log"
}

# missing_pkgs PKG...: prints the packages that are not installed.
missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
  done
}

# apt_install PKG...: installs the packages that are missing (no recommends).
apt_install() {
  local -a need
  mapfile -t need < <(missing_pkgs "$@")
  ((${#need[@]})) || return 0
  local t0 log
  t0=$(date +%s.%N)
  apt_update_once
  log "apt-get install ${need[*]}"
  mkdir -p "$TESTENV_DIR"
  log=$TESTENV_DIR/apt-install.log
  DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install --no-install-recommends \
    "${need[@]}" >>"$log" 2>&1 || die "apt-get install ${need[*]} failed; log: $log"
  log "installed ${need[*]} in $(elapsed "$t0")s"
}

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local p _
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! ss -Htln "sport = :$p" | grep -q .; then
      echo "$p"
      return 0
    fi
  done
  die "no free TCP port found"
}

# pid_alive PID PATTERN: true when PID runs and its command line contains
# PATTERN (so a recycled PID is never taken for ours).
pid_alive() {
  local pid=$1 pat=$2
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pat"
}

# stop_pid PID PATTERN [GRACE]: SIGTERM, wait up to GRACE seconds (default 10),
# then SIGKILL; only if pid_alive PID PATTERN.
stop_pid() {
  local pid=$1 pat=$2 grace=${3:-10} deadline
  pid_alive "$pid" "$pat" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(date +%s) + grace))
  while pid_alive "$pid" "$pat" && (($(date +%s) < deadline)); do sleep 0.05; done
  if pid_alive "$pid" "$pat"; then
    log "pid $pid did not stop in ${grace}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_alive "$pid" "$pat"; do sleep 0.05; done
  fi
}
