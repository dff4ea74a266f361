#!/usr/bin/env bash
# fuzz.sh: run every fuzzer of the module (func Fuzz... in *_test.go) for a
# while each. Their seed corpora already run in every go test; this explores
# beyond them. A failing input is written under the package's testdata/fuzz/,
# where go test replays it from then on.
#
#   scripts/fuzz.sh                          # 30s per fuzzer
#   FUZZTIME=10m scripts/fuzz.sh             # longer
#   scripts/fuzz.sh ./blockdiff/nbd          # only these packages
#   FUZZ_TAGS="ceph pacific" scripts/fuzz.sh # the Ceph packages' fuzzers too
#
# FUZZTIME is go test's -fuzztime (a duration, or Nx for N executions);
# FUZZ_PARALLEL the fuzzing workers (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
tags=${FUZZ_TAGS:-}
pkgs=("$@")
[[ ${#pkgs[@]} -gt 0 ]] || pkgs=(./...)
failed=0 ran=0
while read -r pkg dir files; do
  [[ -n $files ]] || continue
  names=$(cd "$dir" && grep -ho '^func Fuzz[A-Za-z0-9_]*' $files | sed 's/^func //' | sort -u) || true
  for name in $names; do
    echo "fuzz.sh: $pkg $name ($fuzztime)" >&2
    ran=$((ran + 1))
    if ! go test -tags "$tags" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "${FUZZ_PARALLEL:-2}" "$pkg"; then
      failed=$((failed + 1))
    fi
  done
done < <(go list -e -tags "$tags" -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}}' "${pkgs[@]}")
echo "fuzz.sh: $ran fuzzers run for $fuzztime each, $failed failed" >&2
[[ $failed -eq 0 ]]
