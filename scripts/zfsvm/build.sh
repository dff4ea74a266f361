#!/usr/bin/env bash
# zfsvm/build.sh: makes sure the OpenZFS guest artefacts exist, building what
# is missing, and prints the env lines that point at them:
#
#   export ZFSVM_KERNEL=/var/cache/cairn-zfsvm/<key>/vmlinuz
#   export ZFSVM_INITRD=/var/cache/cairn-zfsvm/<key>/initramfs-<hash>.cpio
#   export ZFSVM_RUN=<repo>/scripts/zfsvm/run.sh
#
# The host kernel cannot load modules, so the guest is Debian's own kernel with
# the zfs module built from contrib's zfs-dkms source against its headers. The
# packages are downloaded and unpacked with `dpkg -x`, never installed on the
# host. <key> names the kernel and ZFS package versions; the initramfs is keyed
# as well by the guest init and this script, so a change to either repacks it
# (seconds) without rebuilding the module (~8 min on 2 cores).
#
# Only the host tools (qemu, cpio, kmod) are installed with apt. Debian contrib
# (and bookworm-backports) are reached through a sources file, lists and apt
# cache of our own in $ZFSVM_CACHE/apt: the system's apt configuration is left
# alone. Those lists are refreshed when older than a week, or when a download
# fails.
#
# Env knobs:
#   ZFSVM_CACHE      cache dir (default /var/cache/cairn-zfsvm)
#   ZFSVM_ZFS_SUITE  bookworm-backports (default: OpenZFS 2.3) | bookworm (2.1)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=zfsvm
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

CACHE=${ZFSVM_CACHE:-/var/cache/cairn-zfsvm}
ZSUITE=${ZFSVM_ZFS_SUITE:-bookworm-backports}
case $ZSUITE in bookworm | bookworm-backports) ;; *) die "ZFSVM_ZFS_SUITE=$ZSUITE: want bookworm or bookworm-backports" ;; esac
T0=$(date +%s.%N)

# ------------------------------------------------------------ host tools
command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
command -v cpio >/dev/null || apt_install cpio
command -v depmod >/dev/null || apt_install kmod
for b in gcc-12 make strip; do
  command -v $b >/dev/null || apt_install gcc-12 make binutils
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.lock; waiting"
  flock 9
fi

# ------------------------------------------------------------ apt (own lists, contrib)
APTDIR=$CACHE/apt
ZAPT=(-o "Dir::Etc::sourcelist=$APTDIR/all.sources" -o Dir::Etc::sourceparts=/dev/null
  -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o DPkg::Lock::Timeout=600 -q)
zapt_update() {
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  local src=/etc/apt/sources.list.d/debian.sources
  [[ -f $src ]] || die "$src not found: need Debian's deb822 sources to add contrib to"
  # the system's Debian sources, every `main` also with contrib (zfs lives there)
  sed -E 's/^Components:(.*\<main\>.*)$/Components:\1 contrib/; s/contrib(.*)contrib/contrib\1/' "$src" >"$APTDIR/all.sources.tmp"
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' "$src")
  [[ -n $uri ]] || uri=http://deb.debian.org/debian
  printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" >>"$APTDIR/all.sources.tmp"
  mv "$APTDIR/all.sources.tmp" "$APTDIR/all.sources"
  log "apt-get update (own lists in $APTDIR, main+contrib, with bookworm-backports)"
  apt-get "${ZAPT[@]}" update -qq >"$APTDIR/update.log" 2>&1 || die "apt-get update of contrib lists failed; log: $APTDIR/update.log"
  touch "$APTDIR/lists/.stamp"
}
lists_fresh() { [[ -f $APTDIR/lists/.stamp && -n $(find "$APTDIR/lists/.stamp" -mtime -7) ]]; }

# resolve: sets KPKG (linux-image-<abi>), KV (abi), KVER, ZVER from the lists.
resolve() {
  local dep
  dep=$(apt-cache "${ZAPT[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  KV=${dep#linux-image-}
  [[ -n $KV ]] || return 1
  KVER=$(apt-cache "${ZAPT[@]}" policy "linux-image-$KV" 2>/dev/null | awk '/Candidate:/{print $2}')
  ZVER=$(apt-cache "${ZAPT[@]}" -t "$ZSUITE" policy zfs-dkms 2>/dev/null | awk '/Candidate:/{print $2}')
  [[ -n $KVER && -n $ZVER && $ZVER != "(none)" ]]
}

lists_fresh || zapt_update
# apt-cache takes ~1.5 s a call: remember what the current lists resolve to
MEMO=$APTDIR/resolved-$ZSUITE
if [[ -f $MEMO && $MEMO -nt $APTDIR/lists/.stamp ]] && read -r KV KVER ZVER <"$MEMO" && [[ -n $ZVER ]]; then
  :
else
  if ! resolve; then
    zapt_update
    resolve || die "cannot resolve linux-image-amd64 / zfs-dkms ($ZSUITE) from $APTDIR/lists"
  fi
  echo "$KV $KVER $ZVER" >"$MEMO"
fi
KEY="linux-$KVER-$KV--zfs-$ZVER"
KEY=${KEY//[^A-Za-z0-9._+-]/_}
D=$CACHE/$KEY
X=$D/root # unpacked guest packages
ZMOD=$X/lib/modules/$KV/updates/zfs
log "key $KEY"

# ------------------------------------------------------------ download + unpack
download() {
  local suite=$1
  local -a pk=("linux-image-$KV=$KVER" "linux-headers-$KV" "linux-headers-${KV%-amd64}-common"
    "linux-kbuild-$(echo "$KV" | cut -d. -f1-2)" busybox-static)
  local z
  # zfs-dkms, zfsutils-linux and the zfs libraries zfsutils-linux depends on
  for z in zfs-dkms zfsutils-linux $(apt-cache "${ZAPT[@]}" -t "$suite" depends zfsutils-linux |
    awk '/Depends: lib(zfs|zpool|nvpair|uutil)/{print $2}' | sort -u); do
    pk+=("$z/$suite")
  done
  rm -rf "$D/debs"
  mkdir -p "$D/debs"
  log "downloading ${#pk[@]} packages: ${pk[*]}"
  (cd "$D/debs" && apt-get "${ZAPT[@]}" download "${pk[@]}") >"$D/download.log" 2>&1
}
if [[ ! -f $D/.unpacked ]]; then
  t=$(date +%s.%N)
  mkdir -p "$D"
  if ! download "$ZSUITE"; then
    log "download failed (stale lists?); refreshing lists and retrying"
    zapt_update
    download "$ZSUITE" || die "downloading guest packages failed; log: $D/download.log"
  fi
  rm -rf "$X"
  mkdir -p "$X"
  for deb in "$D"/debs/*.deb; do dpkg -x "$deb" "$X"; done
  touch "$D/.unpacked"
  log "downloaded and unpacked in $(elapsed "$t")s"
fi

# ------------------------------------------------------------ the zfs module
if [[ ! -f $ZMOD/zfs.ko ]]; then
  t=$(date +%s.%N)
  KDIR=$X/usr/src/linux-headers-$KV
  [[ -d $KDIR ]] || die "kernel headers missing in $KDIR (remove $D and retry)"
  # Debian's arch header dir includes the -common Makefile by absolute path
  sed -i -E "s#^include .*/usr/src/(linux-headers-[^/]+/Makefile)#include $X/usr/src/\1#" "$KDIR/Makefile"
  ZSRC=$(ls -d "$X"/usr/src/zfs-* | head -1)
  [[ -d $ZSRC ]] || die "zfs source missing under $X/usr/src"
  B=$D/build
  rm -rf "$B"
  cp -a "$ZSRC" "$B"
  log "configuring $(basename "$ZSRC") for $KV; log $D/zfs-configure.log"
  (cd "$B" && ./configure -q --with-config=kernel --with-linux="$X/usr/src/linux-headers-${KV%-amd64}-common" \
    --with-linux-obj="$KDIR") >"$D/zfs-configure.log" 2>&1 || die "zfs configure failed; log: $D/zfs-configure.log"
  log "building the zfs modules (~8 min on 2 cores); log $D/zfs-make.log"
  make -C "$B/module" -j"$(($(nproc) + 1))" >"$D/zfs-make.log" 2>&1 || die "zfs module build failed; log: $D/zfs-make.log"
  rm -rf "$ZMOD.tmp"
  mkdir -p "$ZMOD.tmp"
  for k in "$B"/module/*.ko "$B"/module/*/*.ko; do
    [[ -f $k ]] && strip --strip-debug -o "$ZMOD.tmp/$(basename "$k")" "$k"
  done
  [[ -f $ZMOD.tmp/zfs.ko ]] || die "zfs.ko not produced; log: $D/zfs-make.log"
  rm -rf "$ZMOD"
  mv "$ZMOD.tmp" "$ZMOD"
  depmod -b "$X" "$KV"
  # what is left is only needed to build again: ~1 GB of sources and objects
  rm -rf "$B" "$D/debs" "$X/usr/src"
  log "zfs module built in $(elapsed "$t")s ($(du -sh "$ZMOD" | cut -f1) stripped)"
fi
[[ -f $X/lib/modules/$KV/modules.dep ]] || depmod -b "$X" "$KV"
[[ -f $D/vmlinuz ]] || cp "$X/boot/vmlinuz-$KV" "$D/vmlinuz"

# ------------------------------------------------------------ initramfs
H=$(cat "$HERE/init" "$0" | sha256sum | cut -c1-12)
INITRD=$D/initramfs-$H.cpio
if [[ ! -f $INITRD ]]; then
  t=$(date +%s.%N)
  R=$D/initramfs-root
  rm -rf "$R"
  mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt/host,lib/x86_64-linux-gnu,lib64,usr/bin,usr/sbin,var/tmp,root}
  install -m755 "$HERE/init" "$R/init"
  cp "$X/bin/busybox" "$R/bin/busybox"
  for b in zfs zpool zdb zstream zstreamdump mount.zfs zgenhostid; do
    if [[ -e $X/sbin/$b ]]; then cp -a "$X/sbin/$b" "$R/sbin/"; fi
  done
  [[ -e $R/sbin/zstreamdump ]] || ln -sf zstream "$R/sbin/zstreamdump"
  # shared libraries: zfs's from the unpacked packages, the rest from the host
  # (same distribution)
  LDP=$X/lib/x86_64-linux-gnu:$X/usr/lib/x86_64-linux-gnu
  libs=$(for b in "$R"/sbin/*; do [[ -L $b ]] || LD_LIBRARY_PATH=$LDP ldd "$b"; done | sort -u)
  if grep -q 'not found' <<<"$libs"; then
    die "libraries missing on the host for the zfs tools: $(grep 'not found' <<<"$libs" | tr -s ' \t\n' ' ')"
  fi
  # libgcc_s is dlopen()ed by glibc for pthread_cancel (zfs send into a closed
  # pipe aborts without it)
  {
    awk '$2=="=>" && $3 ~ /^\//{print $3} $1 ~ /^\/lib64\//{print $1}' <<<"$libs"
    ls /lib/x86_64-linux-gnu/libgcc_s.so.1
  } | sort -u | while read -r l; do
    case $l in
      /lib64/*) cp -L "$l" "$R/lib64/" ;;
      *) cp -L "$l" "$R/lib/x86_64-linux-gnu/" ;;
    esac
  done
  # kernel modules and their dependencies, in load order
  : >"$R/etc/zfsvm-modules.list"
  for m in virtio_pci virtio_blk 9pnet_virtio 9p loop zfs; do
    modprobe -d "$X" -S "$KV" --show-depends "$m" | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    rel=${ko#"$X"}
    mkdir -p "$R$(dirname "$rel")"
    cp "$ko" "$R$rel"
    echo "$rel" >>"$R/etc/zfsvm-modules.list"
  done
  grep -q '/zfs.ko' "$R/etc/zfsvm-modules.list" || die "zfs.ko not in the module list"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
  printf 'root:x:0:\n' >"$R/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"
  (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) >"$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$R"
  log "initramfs packed in $(elapsed "$t")s ($(du -h "$INITRD" | cut -f1))"
fi

# Others were packed from other versions of the init or of this script, and a
# test run elsewhere may still boot one: only those no `up` chose for a day go.
touch "$INITRD"
find "$D" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "$(basename "$INITRD")" -mtime +0 -delete

# Builds for kernel or ZFS versions no `up` chose for two weeks go (~0.5 GB each).
touch "$D/.used"
for old in "$CACHE"/linux-*; do
  if [[ $old != "$D" && -d $old && ! $old/.used -nt $APTDIR/lists/.stamp && -n $(find "$old/.used" -mtime +14 2>/dev/null) ]]; then
    log "removing the unused build $old"
    rm -rf -- "$old"
  fi
done

log "artefacts ready in $(elapsed "$T0")s: $D"
echo "export ZFSVM_KERNEL=$D/vmlinuz"
echo "export ZFSVM_INITRD=$INITRD"
echo "export ZFSVM_RUN=$HERE/run.sh"
