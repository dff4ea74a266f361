#!/usr/bin/env bash
# test.sh: the README's test command (make test). On a fresh machine it
# installs everything the tests need, lints, starts the real servers on
# loopback, runs every unit and integration test, and stops the servers,
# also when something fails.
#
# Each run keeps its servers in a state dir of its own (CAIRN_TESTENV_DIR), so
# two runs on one machine never share, or stop, each other's servers.
#
# Knobs: CAIRN_TEST_RACE=0 runs without the race detector (default: on);
# CAIRN_TEST_PKGS (default ./...); CAIRN_TEST_FLAGS, extra go test flags;
# CAIRN_TEST_FUZZTIME, how long each fuzzer runs after the tests (default
# 3s, 0 skips; scripts/fuzz.sh).
#
# Cold and warm timings of each part: scripts/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
since() { echo "$(($(date +%s) - $1))s"; }

bash scripts/lint.sh
echo "test.sh: lint done in $(since "$t0")" >&2

CAIRN_TESTENV_DIR=$(mktemp -d /tmp/cairn-testenv-run.XXXXXX)
export CAIRN_TESTENV_DIR
export CAIRN_TESTENV_FILE=$CAIRN_TESTENV_DIR/env
down() {
  local t
  t=$(date +%s)
  bash scripts/testenv down || echo "test.sh: scripts/testenv down failed: servers may still run (state in $CAIRN_TESTENV_DIR)" >&2
  echo "test.sh: testenv down in $(since "$t"); total $(since "$t0")" >&2
}
trap down EXIT

t=$(date +%s)
bash scripts/testenv up
echo "test.sh: testenv up in $(since "$t")" >&2
# shellcheck source=/dev/null
source "$CAIRN_TESTENV_FILE"

# -timeout: the ZFS packages run all their tests inside the emulated guest,
# which takes minutes; 30m leaves room on a loaded machine.
race=(-race)
[[ ${CAIRN_TEST_RACE:-1} == 1 ]] || race=()
t=$(date +%s)
# shellcheck disable=SC2086
go test -count=1 -timeout 30m "${race[@]}" -tags "ceph pacific" ${CAIRN_TEST_FLAGS:-} ${CAIRN_TEST_PKGS:-./...}
echo "test.sh: go test done in $(since "$t")" >&2

# What a build without the Ceph tags tells its user (the rest runs tagged).
t=$(date +%s)
go test -count=1 -run 'TestNoCeph' ./cmd/cairn-block/ ./cmd/cairn-kube/
echo "test.sh: untagged Ceph messages checked in $(since "$t")" >&2

# A pure-Go build (CGO_ENABLED=0) compresses with klauspost's encoder instead
# of libzstd (internal/zstdenc): its round trips must hold too.
t=$(date +%s)
CGO_ENABLED=0 go test -count=1 ./internal/zstdenc/
CGO_ENABLED=0 go test -count=1 -run '^TestRoundTrip' ./blockdiff/
echo "test.sh: pure-Go (no cgo) round trips in $(since "$t")" >&2

# The fuzzers beyond their seed corpora (which go test just ran), briefly:
# CAIRN_TEST_FUZZTIME each (default 3s; 0 skips). Longer: scripts/fuzz.sh.
if [[ ${CAIRN_TEST_FUZZTIME:-3s} != 0 ]]; then
  t=$(date +%s)
  FUZZTIME=${CAIRN_TEST_FUZZTIME:-3s} FUZZ_TAGS="ceph pacific" bash scripts/fuzz.sh
  echo "test.sh: fuzzing done in $(since "$t")" >&2
fi

# The README's main job must keep working too.
t=$(date +%s)
CAIRN_DEMO_DIR=$CAIRN_TESTENV_DIR/demo bash scripts/demo.sh
echo "test.sh: make demo done in $(since "$t")" >&2
