#!/usr/bin/env bash
# bench-tools.sh: installs the peers and tools bench/ compares cairn with
# (BenchmarkSpeed, BenchmarkCompareRestic): restic (Debian's 0.14), GNU time
# (peak RSS of the children) and dd (coreutils). kopia is not packaged by
# Debian: the benchmarks use it when it is on PATH and say so when it is not.
# Prints nothing but apt's progress when something is missing.
set -euo pipefail
LOG_TAG=bench-tools
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
apt_install restic time coreutils
command -v kopia >/dev/null || log "kopia is not installed: the benchmarks compare with restic only"
