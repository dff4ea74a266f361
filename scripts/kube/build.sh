#!/usr/bin/env bash
# kube/build.sh: makes sure a kube-apiserver and an etcd exist, building what is
# missing, and prints the env line that points at them:
#
#   export KUBE_BIN=/var/cache/cairn-kube/<key>/bin      (etcd, kube-apiserver)
#
# Both are built from the Go module proxy only, as static binaries, from the
# wrapper modules in src/ (their go.mod and go.sum are committed, so a build
# never resolves versions: kube-apiserver is k8s.io/kubernetes with each of its
# staging modules replaced by the published k8s.io/X v0.<minor>.<patch>; etcd
# is go.etcd.io/etcd/server/v3's etcdmain). <key> names the versions and a
# hash of src/ and of this script, so a change to either rebuilds; an
# unchanged key prints the line at once (a warm run takes milliseconds).
#
# The module and build caches live in the cache dir too (cold: ~1 GB of
# modules, ~3 GB of build cache, kube-apiserver ~10 min of CPU and 2.3 GB of
# RAM for `go build`; etcd ~1.5 min). A warm Go cache relinks in ~30 s.
#
# Env knobs:
#   KUBE_CACHE   cache dir (default /var/cache/cairn-kube)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=kube-build
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

CACHE=${KUBE_CACHE:-/var/cache/cairn-kube}
K8S_VERSION=1.37.2 # k8s.io/kubernetes in src/kube-apiserver/go.mod
ETCD_VERSION=3.7.3 # go.etcd.io/etcd/server/v3 in src/etcd/go.mod
grep -q "k8s.io/kubernetes v$K8S_VERSION\$" "$HERE/src/kube-apiserver/go.mod" ||
  die "src/kube-apiserver/go.mod does not require k8s.io/kubernetes v$K8S_VERSION: update K8S_VERSION here"
grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION\$" "$HERE/src/etcd/go.mod" ||
  die "src/etcd/go.mod does not require go.etcd.io/etcd/server/v3 v$ETCD_VERSION: update ETCD_VERSION here"

hash=$(cd "$HERE" && cat build.sh src/etcd/* src/kube-apiserver/* | sha256sum | cut -c1-12)
KEY=k8s-$K8S_VERSION--etcd-$ETCD_VERSION--$hash
D=$CACHE/$KEY
if [[ -f $D/.done && -x $D/bin/kube-apiserver && -x $D/bin/etcd ]]; then
  echo "export KUBE_BIN=$D/bin"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.lock; waiting"
  flock 9
fi
if [[ -f $D/.done ]]; then # built by the holder of the lock
  echo "export KUBE_BIN=$D/bin"
  exit 0
fi
command -v go >/dev/null || die "go is not installed"

export GOMODCACHE=$CACHE/gomodcache GOCACHE=$CACHE/gocache CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -trimpath -mod=readonly"
mkdir -p "$D/bin"
minor=${K8S_VERSION#*.}
minor=${minor%%.*}
vflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  vflags+="-X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean "
done

# build NAME LDFLAGS: go build src/NAME into $D/bin/NAME, log in $D/NAME.log
build() {
  local t0
  t0=$(date +%s.%N)
  log "building $1 (log: $D/$1.log)"
  if ! (cd "$HERE/src/$1" && go build -ldflags "-s -w $2" -o "$D/bin/$1.tmp" .) >"$D/$1.log" 2>&1; then
    tail -20 "$D/$1.log" >&2
    die "building $1 failed; log: $D/$1.log"
  fi
  mv "$D/bin/$1.tmp" "$D/bin/$1"
  log "$1 built in $(elapsed "$t0")s ($(du -h "$D/bin/$1" | cut -f1))"
}
T0=$(date +%s.%N)
build etcd ""
build kube-apiserver "$vflags"
"$D/bin/kube-apiserver" --version >&2
touch "$D/.done"
log "built in $(elapsed "$T0")s into $D"
# older keys' binaries (the caches stay: they make the next build warm)
for old in "$CACHE"/k8s-*; do
  [[ $old != "$D" && -d $old ]] && rm -rf -- "$old"
done
echo "export KUBE_BIN=$D/bin"
