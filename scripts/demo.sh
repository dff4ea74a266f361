#!/usr/bin/env bash
# demo.sh: the README's main job. Builds cairn-block, makes a sample disk image
# (data, zeros, a hole, repeated blocks), backs it up into a local file
# repository, changes 1% of it and backs it up again, restores both versions,
# and checks the restored bytes equal the originals. No server, no set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${CAIRN_DEMO_DIR:-$(mktemp -d /tmp/cairn-demo.XXXXXX)}
mkdir -p bin "$work"
go build -o bin/cairn-block ./cmd/cairn-block
cb=bin/cairn-block
export CAIRN_REPO="file://$work/repo"
unset CAIRN_PASSWORD # the demo's repository is unencrypted: a passphrase would be refused

img=$work/sample.img
echo "demo: making a 64 MiB sample image in $img" >&2
truncate -s 64M "$img"
head -c 16M /dev/urandom | dd of="$img" conv=notrunc status=none                   # random data
{ yes "cairn sample text line $(date +%F)" || true; } | head -c 8M | dd of="$img" bs=1M seek=24 conv=notrunc status=none
dd if="$img" of="$img" bs=1M count=4 seek=40 conv=notrunc status=none               # a repeated block
# 44M..64M stays a hole

$cb init
v1=$($cb backup "file://$img" sample)
echo "demo: backed up version $v1" >&2
cp --sparse=always "$img" "$work/sample.v1.img"
head -c 640K /dev/urandom | dd of="$img" bs=64K seek=100 conv=notrunc status=none   # change 1%
cp --sparse=always "$img" "$work/sample.v2.img"
v2=$($cb backup --json "file://$img" sample)
echo "demo: second backup: $v2" >&2
v2=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' <<<"$v2")

for v in 1 2; do
  id=v$v; id=${!id}
  $cb restore "$id" "file://$work/restored.v$v.img"
  cmp "$work/sample.v$v.img" "$work/restored.v$v.img"
  echo "demo: restored version $v ($id) byte for byte" >&2
done
$cb ls
echo "demo: ok (work dir $work)" >&2
