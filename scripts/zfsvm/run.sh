#!/usr/bin/env bash
# zfsvm/run.sh SHARE_DIR GUEST_SCRIPT: boot the OpenZFS guest under qemu
# (software emulation: no KVM here), run `sh GUEST_SCRIPT` in it as root and
# exit with that script's exit code.
#
# SHARE_DIR is mounted read-write in the guest at /mnt/host (virtio-9p), and
# GUEST_SCRIPT is a path relative to it; put static binaries there
# (CGO_ENABLED=0 go test -c). Use a fresh SHARE_DIR per run: two guests must
# not share one. The guest has loopback only, /tmp on tmpfs, busybox, and the
# zfs/zpool/zdb/zstream tools with the zfs module loaded.
#
# stdout: the guest's serial console, as it comes (lines end in \r\n); also
# kept in SHARE_DIR/.zfsvm-console.log. Exit code: the script's, or 124 on
# timeout, 125 when the guest died or failed without a verdict, 130/143 when
# interrupted. On SIGTERM/SIGINT/SIGHUP the guest is killed.
#
# Env: ZFSVM_KERNEL, ZFSVM_INITRD (required; `scripts/testenv up zfsvm` writes
# them into the env file), ZFSVM_TIMEOUT (seconds, default 1800),
# ZFSVM_BOOT_TIMEOUT (seconds until the guest's first line, else it is booted
# once more; default 300: a boot takes 10-60 s), ZFSVM_MEM
# (MiB, default 2048), ZFSVM_SMP (default: the host's cores), ZFSVM_APPEND
# (extra kernel command line), ZFSVM_QEMU_EXTRA (extra qemu args, word-split).
set -euo pipefail
LOG_TAG=zfsvm
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

[[ $# -eq 2 ]] || die "usage: run.sh SHARE_DIR GUEST_SCRIPT"
SHARE=$(cd "$1" && pwd) || die "share dir $1 not found"
SCRIPT=$2
[[ -f $SHARE/$SCRIPT ]] || die "$SHARE/$SCRIPT not found"
[[ $SCRIPT != /* && $SCRIPT != *[[:space:]]* ]] || die "GUEST_SCRIPT must be a relative path without spaces"
KERNEL=${ZFSVM_KERNEL:?ZFSVM_KERNEL unset: run scripts/testenv up zfsvm and source its env file}
INITRD=${ZFSVM_INITRD:?ZFSVM_INITRD unset: run scripts/testenv up zfsvm and source its env file}
[[ -f $KERNEL && -f $INITRD ]] || die "guest kernel or initramfs missing ($KERNEL, $INITRD): run scripts/testenv up zfsvm"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run scripts/testenv up zfsvm"
TIMEOUT=${ZFSVM_TIMEOUT:-1800}
BOOT_TIMEOUT=${ZFSVM_BOOT_TIMEOUT:-300}
MEM=${ZFSVM_MEM:-2048}
SMP=${ZFSVM_SMP:-$(nproc)}
LOG=$SHARE/.zfsvm-console.log
RCFILE=$SHARE/.zfsvm-rc
rm -f "$RCFILE" "$LOG"

APPEND="console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off zfsvm.script=$SCRIPT ${ZFSVM_APPEND:-}"
Q=(qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM"
  -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
  -nodefaults -no-reboot -display none -monitor none
  -chardev "stdio,id=con,signal=off,logfile=$LOG" -serial chardev:con
  -fsdev "local,id=fs0,path=$SHARE,security_model=none" -device virtio-9p-pci,fsdev=fs0,mount_tag=host0)
# shellcheck disable=SC2206
Q+=(${ZFSVM_QEMU_EXTRA:-})

# start boots the guest in the background (qpid).
start() {
  rm -f "$LOG"
  timeout -k 5 "$TIMEOUT" "${Q[@]}" </dev/null &
  qpid=$!
}

# watch_boot waits for the guest's first line ("zfsvm: ...", printed once the
# module is loaded, before the script runs): 0 when it came, 1 when it did
# not within BOOT_TIMEOUT (the guest is then killed), 2 when qemu ended first.
# Under TCG a guest very rarely hangs in early boot with a silent console;
# it would otherwise sit there until TIMEOUT.
watch_boot() {
  local deadline=$(($(date +%s) + BOOT_TIMEOUT))
  while kill -0 "$qpid" 2>/dev/null; do
    grep -aq 'zfsvm: ' "$LOG" 2>/dev/null && return 0
    if (($(date +%s) >= deadline)); then
      kill -TERM "$qpid" 2>/dev/null
      wait "$qpid" 2>/dev/null
      return 1
    fi
    sleep 2
  done
  return 2
}

t0=$(date +%s.%N)
log "booting the guest (smp=$SMP mem=${MEM}M timeout=${TIMEOUT}s), script $SCRIPT"
interrupted=0
trap 'interrupted=1; kill -TERM "$qpid" 2>/dev/null || true' TERM INT HUP
set +e
start
for attempt in 1 2; do
  watch_boot
  booted=$?
  ((booted == 1 && !interrupted)) || break
  if ((attempt == 1)); then
    log "no sign of life from the guest after ${BOOT_TIMEOUT}s (ZFSVM_BOOT_TIMEOUT): killed, booting it again"
    start
  else
    log "the guest did not boot twice (no line within ${BOOT_TIMEOUT}s each); console log: $LOG"
    exit 125
  fi
done
wait "$qpid"
qrc=$?
while kill -0 "$qpid" 2>/dev/null; do # wait returns early when a trap ran
  wait "$qpid"
  qrc=$?
done
set -e
trap - TERM INT HUP

if ((interrupted)); then
  log "interrupted; guest killed after $(elapsed "$t0")s (console log: $LOG)"
  exit 143
fi
if [[ -f $RCFILE ]]; then
  rc=$(cat "$RCFILE")
elif rc=$(tr -d '\r' <"$LOG" 2>/dev/null | grep -a -o '^ZFSVM_RC=[0-9]*' | tail -n1 | cut -d= -f2) && [[ -n $rc ]]; then
  :
elif ((qrc == 124)); then
  log "the guest timed out after ${TIMEOUT}s (ZFSVM_TIMEOUT); console log: $LOG"
  exit 124
else
  log "the guest died without a verdict (qemu exit $qrc) after $(elapsed "$t0")s; console log: $LOG"
  exit 125
fi
[[ $rc =~ ^[0-9]+$ ]] || { log "bad exit code '$rc' from the guest"; exit 125; }
log "guest done in $(elapsed "$t0")s: $SCRIPT exited $rc"
exit "$rc"
