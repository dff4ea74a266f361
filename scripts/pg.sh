#!/usr/bin/env bash
# pg.sh start|stop|status DIR: a PostgreSQL 15 instance of its own (Debian's
# postgresql-15 binaries, not the system cluster) with its data in DIR, on a
# free loopback port.
#
#   start DIR   initdb DIR/data, start the server, write DIR/pid and DIR/env
#               (also printed on stdout). DIR should be new (tmpfs is fastest).
#   stop DIR    stop the postmaster whose PID start recorded (fast shutdown,
#               then immediate, then SIGKILL) and remove DIR. Idempotent.
#   status DIR  exit 0 when the recorded postmaster runs and accepts connections.
#
# Authentication: TCP connections need the password of role cairn
# (scram-sha-256), so a test can check what a wrong password does; the Unix
# socket in DIR trusts local users. The server runs as the postgres user when
# started by root (initdb refuses root).
#
# DIR/env: PG_DSN (postgres:// URL), PGHOST PGPORT PGUSER PGPASSWORD
# PGDATABASE PGSSLMODE (for psql, pg_dump, pg_dumpall, pgbench) and PG_BINDIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=postgres
# shellcheck source=lib.sh
source "$HERE/lib.sh"

PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
DIR=${2:-}
[[ -n $cmd && -n $DIR ]] || die "usage: pg.sh start|stop|status DIR"

# as_owner CMD...: run as the owner of the data (postgres when we are root)
as_owner() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

recorded_pid() { cat "$DIR/pid" 2>/dev/null || true; }

case $cmd in
start)
  [[ -x $PG_BINDIR/postgres ]] || die "$PG_BINDIR/postgres not found (apt-get install postgresql-15)"
  if ((EUID == 0)); then
    id postgres >/dev/null 2>&1 || die "user postgres missing (installed by postgresql-common)"
  fi
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  [[ -e $DIR/data ]] && die "$DIR already holds a cluster; use a fresh dir"
  mkdir -p "$DIR/log"
  PORT=$(free_port)
  PASS=$(uuidgen | tr -d -)
  printf '%s\n' "$PASS" >"$DIR/pwfile"
  if ((EUID == 0)); then chown -R postgres: "$DIR"; fi
  as_owner "$PG_BINDIR/initdb" -D "$DIR/data" -U cairn --pwfile="$DIR/pwfile" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$DIR/log/initdb.log" 2>&1 ||
    die "initdb failed; log: $DIR/log/initdb.log"
  rm -f "$DIR/pwfile"
  cat >>"$DIR/data/postgresql.conf" <<EOF
# scripts/pg.sh: a throwaway test instance
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
shared_buffers = 128MB
logging_collector = off
EOF
  started=0
  as_owner "$PG_BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/log/postgres.log" -w -t 60 start \
    >"$DIR/log/pg_ctl.log" 2>&1 && started=1
  # recorded even when pg_ctl gave up waiting: stop must find a slow postmaster
  if [[ -f $DIR/data/postmaster.pid ]]; then head -n1 "$DIR/data/postmaster.pid" >"$DIR/pid"; fi
  if ((started == 0)); then
    tail -n 20 "$DIR/log/postgres.log" >&2 || true
    die "postgres did not start; logs: $DIR/log/postgres.log $DIR/log/pg_ctl.log"
  fi
  DSN="postgres://cairn:$PASS@127.0.0.1:$PORT/postgres?sslmode=disable"
  PGPASSWORD=$PASS "$PG_BINDIR/psql" "$DSN" -Atqc 'SELECT 1' >/dev/null 2>"$DIR/log/psql.err" ||
    die "postgres started but SELECT 1 over TCP failed; log: $DIR/log/psql.err"
  cat >"$DIR/env" <<EOF
export PG_DSN='$DSN'
export PGHOST=127.0.0.1
export PGPORT=$PORT
export PGUSER=cairn
export PGPASSWORD=$PASS
export PGDATABASE=postgres
export PGSSLMODE=disable
export PG_BINDIR=$PG_BINDIR
EOF
  log "postgres $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (pid $(recorded_pid), data $DIR/data)"
  cat "$DIR/env"
  ;;
stop)
  [[ -d $DIR ]] || exit 0
  DIR=$(cd "$DIR" && pwd)
  pid=$(recorded_pid)
  pat="$DIR/data"
  if pid_alive "$pid" "$pat"; then
    # SIGINT: fast shutdown; SIGQUIT: immediate; then SIGKILL
    for sig in INT QUIT KILL; do
      kill -"$sig" "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        pid_alive "$pid" "$pat" || break
        sleep 0.05
      done
      pid_alive "$pid" "$pat" || break
      log "postmaster $pid still running after SIG$sig"
    done
    log "stopped postgres (pid $pid)"
  fi
  rm -rf -- "$DIR"
  ;;
status)
  pid=$(recorded_pid)
  pid_alive "$pid" "$DIR/data" || { echo "postgres: not running"; exit 1; }
  port=$(awk -F= '/^export PGPORT=/{print $2}' "$DIR/env")
  if "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    echo "postgres: running, pid $pid, 127.0.0.1:$port, data $DIR/data"
  else
    echo "postgres: pid $pid runs but 127.0.0.1:$port does not accept connections"
    exit 1
  fi
  ;;
*) die "usage: pg.sh start|stop|status DIR" ;;
esac
