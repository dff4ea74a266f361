#!/usr/bin/env bash
# tools.sh: installs the Go tools the checks use, pinned, from the Go module proxy.
# Prints nothing when they are already there.
set -euo pipefail
STATICCHECK_VERSION=v0.8.2 # staticcheck 2026.2.2
GOBIN=$(go env GOPATH)/bin
if ! "$GOBIN/staticcheck" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
  echo "tools: installing staticcheck $STATICCHECK_VERSION" >&2
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
