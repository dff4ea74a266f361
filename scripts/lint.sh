#!/usr/bin/env bash
# lint.sh: gofmt, go vet and staticcheck over the whole module, with every
# build tag combination the project ships: none, and `ceph pacific` (go-ceph
# against Debian's librbd 16.2, which needs librados-dev and librbd-dev: they
# are installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh
bash scripts/testenv deps ceph
unformatted=$(gofmt -l $(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go'))
if [[ -n $unformatted ]]; then
  echo "lint: gofmt -l lists files:" >&2; echo "$unformatted" >&2; exit 1
fi
for tags in "" "ceph pacific"; do
  go vet -tags "$tags" ./...
  "$(go env GOPATH)/bin/staticcheck" -tags "$tags" ./...
done
# The library packages a Go programmer imports build on macOS too, not only
# on Linux (O_DIRECT and sync_file_range sit in internal/directio's _linux.go).
for goos in darwin; do
  GOOS=$goos go build ./retention/... ./objstore ./blockdiff ./internal/directio
done
echo "lint: ok" >&2
