#!/usr/bin/env bash
# ceph/start.sh DIR: a throwaway single-node Ceph Pacific (Debian packages) on
# 127.0.0.1, no systemd, all state in DIR (put it on tmpfs: the mon fsyncs
# every commit, which makes a disk ~2x slower).
#
# Starts one mon, one OSD (memstore: data in RAM), an RBD pool, and radosgw
# serving S3 on a free loopback port with a user and keys. No mgr: RBD, RADOS
# and S3 work without it, and MGR_DOWN is kept quiet with mon_mgr_mkfs_grace.
#
# Writes the PID of every daemon to DIR/pids (stop.sh DIR stops exactly
# those), daemon logs to DIR/log, and the variables for the tests to DIR/env,
# which it also prints on stdout:
#   CEPH_CONF CEPH_POOL S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
# On failure it stops what it started and keeps DIR for its logs.
#
# Env knobs: CEPH_OSD_SIZE (memstore capacity, default 8G), CEPH_POOL (default
# rbd), CEPH_START_TIMEOUT (seconds per step, default 120).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=ceph
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

DIR=${1:?usage: ceph/start.sh DIR}
for b in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd radosgw radosgw-admin; do
  command -v "$b" >/dev/null || die "$b not found (apt-get install ceph-mon ceph-osd ceph-common radosgw)"
done
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[[ -e $DIR/ceph.conf ]] && die "$DIR already holds a cluster; use a fresh dir"

OSD_SIZE=${CEPH_OSD_SIZE:-8G}
POOL=${CEPH_POOL:-rbd}
TIMEOUT=${CEPH_START_TIMEOUT:-120}
FSID=$(uuidgen)
MON_PORT=$(free_port)
RGW_PORT=$(free_port)
# the OSD binds in a private 100-port window, away from other clusters
MS_BASE=$(free_port)

mkdir -p "$DIR"/{run,log,mon/a,osd/0,rgw,crash}
: >"$DIR/pids"
OK=0
on_exit() {
  if [[ $OK != 1 ]]; then
    log "start failed; stopping what was started; logs kept in $DIR/log"
    bash "$HERE/stop.sh" "$DIR" --keep || true
  fi
}
trap on_exit EXIT

cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:$MON_PORT
mon_initial_members = a
public_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
ms_bind_port_min = $MS_BASE
ms_bind_port_max = $((MS_BASE + 100))
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $DIR/keyring
run_dir = $DIR/run
admin_socket = $DIR/run/\$cluster-\$name.asok
pid_file = $DIR/run/\$cluster-\$name.pid
log_file = $DIR/log/\$cluster-\$name.log
crash_dir = $DIR/crash
exporter_sock_dir = $DIR/run
log_to_stderr = false
err_to_stderr = true
; one OSD: size-1 pools, few PGs, no redundancy warnings
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
auth_allow_insecure_global_id_reclaim = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
; commit mon updates at once (the default 1 s per paxos round dominates start-up)
paxos_propose_interval = 0.01
paxos_min_wait = 0.01
; no mgr: MGR_DOWN is raised only once the cluster is older than this
mon_mgr_mkfs_grace = 315360000
osd_objectstore = memstore
memstore_device_bytes = $(numfmt --from=iec "$OSD_SIZE")
osd_memory_target = 939524096
mon_memory_target = 268435456
rocksdb_cache_size = 67108864
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
osd_heartbeat_grace = 60

[mon]
mon_data = $DIR/mon/\$id
keyring = $DIR/mon/\$id/keyring
mon_cluster_log_file = $DIR/log/\$cluster.log

[osd]
osd_data = $DIR/osd/\$id
keyring = $DIR/osd/\$id/keyring
osd_crush_update_on_start = true

[client.rgw.x]
rgw_data = $DIR/rgw
keyring = $DIR/rgw/keyring
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_dns_name = localhost
rgw_enable_usage_log = false
rgw_thread_pool_size = 32
EOF

export CEPH_CONF=$DIR/ceph.conf
CEPH=(ceph --conf "$CEPH_CONF" --connect-timeout "$TIMEOUT")
CEPHQ=(timeout 10 ceph --conf "$CEPH_CONF" --connect-timeout 5) # for polling

# show_log NAME: the tail of a daemon's logs on stderr
show_log() {
  local f
  for f in "$DIR/log/ceph-$1.log" "$DIR/log/ceph-client.$1.log" "$DIR/log/$1.stdout"; do
    if [[ -s $f ]]; then
      echo "--- tail of $f:" >&2
      tail -n 15 "$f" >&2
    fi
  done
}

# wait_for DESC CMD...: poll CMD until it succeeds; fail fast when a daemon died
wait_for() {
  local desc=$1 deadline pid name
  shift
  deadline=$(($(date +%s) + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || die "timeout (${TIMEOUT}s) waiting for $desc; logs in $DIR/log"
    while read -r pid name; do
      if ! pid_alive "$pid" "$DIR/ceph.conf"; then
        show_log "$name"
        die "$name (pid $pid) died while waiting for $desc; logs in $DIR/log"
      fi
    done <"$DIR/pids"
    sleep 0.2
  done
}

# spawn NAME CMD...: start a daemon in the foreground (-f) in the background
# and record its PID
spawn() {
  local name=$1 pid
  shift
  "$@" </dev/null >>"$DIR/log/$name.stdout" 2>&1 &
  pid=$!
  echo "$pid $name" >>"$DIR/pids"
  sleep 0.3
  if ! kill -0 "$pid" 2>/dev/null; then
    show_log "$name"
    die "$name exited right away; logs in $DIR/log"
  fi
}

# ---- keys: every entity is seeded into the mon's auth db at mkfs
ceph-authtool --create-keyring "$DIR/mon/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/osd/0/keyring" --gen-key -n osd.0 \
  --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/rgw/keyring" --gen-key -n client.rgw.x \
  --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
for k in keyring osd/0/keyring rgw/keyring; do
  ceph-authtool "$DIR/mon/keyring" --import-keyring "$DIR/$k" >/dev/null
done

# ---- mon
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/mon/monmap" >/dev/null
ceph-mon --conf "$CEPH_CONF" --mkfs -i a --monmap "$DIR/mon/monmap" --keyring "$DIR/mon/keyring" \
  >"$DIR/log/mon.a.mkfs" 2>&1 || { tail -20 "$DIR/log/mon.a.mkfs" >&2; die "ceph-mon --mkfs failed; log: $DIR/log/mon.a.mkfs"; }
spawn mon.a ceph-mon --conf "$CEPH_CONF" -i a -f
wait_for "mon quorum" "${CEPHQ[@]}" mon stat
log "mon up on v2:127.0.0.1:$MON_PORT"

# ---- osd
OSD_UUID=$(uuidgen)
OSD_ID=$("${CEPH[@]}" osd new "$OSD_UUID" 2>>"$DIR/log/osd-new.err") || die "ceph osd new failed; log: $DIR/log/osd-new.err"
[[ $OSD_ID == 0 ]] || die "unexpected osd id $OSD_ID"
ceph-osd --conf "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/osd.0.mkfs" 2>&1 ||
  { tail -30 "$DIR/log/osd.0.mkfs" >&2; die "ceph-osd --mkfs failed; log: $DIR/log/osd.0.mkfs"; }
spawn osd.0 ceph-osd --conf "$CEPH_CONF" -i 0 -f

# ---- pools, in one CLI session (each pool op is one mon commit). The rgw
# pools are made here: radosgw would otherwise create them one at a time.
{
  echo "osd pool create $POOL 8 8 replicated"
  echo "osd pool application enable $POOL rbd"
  for p in .rgw.root default.rgw.log default.rgw.control default.rgw.meta \
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    echo "osd pool create $p 8 8 replicated"
    echo "osd pool application enable $p rgw"
  done
} | "${CEPH[@]}" >/dev/null 2>>"$DIR/log/pool-create.err" ||
  { cat "$DIR/log/pool-create.err" >&2; die "pool creation failed; log: $DIR/log/pool-create.err"; }

osd_up() { "${CEPHQ[@]}" osd dump -f json | grep -q '"up":1'; }
wait_for "osd.0 up" osd_up
log "osd.0 up (memstore, $OSD_SIZE)"

rbd --conf "$CEPH_CONF" pool init "$POOL" 2>>"$DIR/log/rbd-pool-init.err" ||
  die "rbd pool init $POOL failed; log: $DIR/log/rbd-pool-init.err"
rbd_ok() { timeout 10 rbd --conf "$CEPH_CONF" ls "$POOL"; }
wait_for "rbd pool $POOL usable" rbd_ok
log "rbd pool '$POOL' usable"

# ---- radosgw
spawn rgw.x radosgw --conf "$CEPH_CONF" -n client.rgw.x -f
S3_ENDPOINT="http://127.0.0.1:$RGW_PORT"
u1=$(uuidgen)
u2=$(uuidgen)
u3=$(uuidgen)
S3_AK=${u1//-/}
S3_AK=${S3_AK^^}
S3_AK=${S3_AK:0:20}
S3_SK=${u2//-/}${u3//-/}
S3_SK=${S3_SK:0:40}
radosgw-admin --conf "$CEPH_CONF" user create --uid=cairn --display-name="cairn tests" \
  --access-key="$S3_AK" --secret-key="$S3_SK" >"$DIR/rgw/user.json" 2>>"$DIR/log/radosgw-admin.log" ||
  { tail -20 "$DIR/log/radosgw-admin.log" >&2; die "radosgw-admin user create failed; log: $DIR/log/radosgw-admin.log"; }
rgw_ok() { curl -sf -o /dev/null "$S3_ENDPOINT/"; }
wait_for "radosgw on $S3_ENDPOINT" rgw_ok
log "radosgw serving S3 on $S3_ENDPOINT (user cairn)"

cat >"$DIR/env" <<EOF
export CEPH_CONF=$DIR/ceph.conf
export CEPH_POOL=$POOL
export S3_ENDPOINT=$S3_ENDPOINT
export AWS_ACCESS_KEY_ID=$S3_AK
export AWS_SECRET_ACCESS_KEY=$S3_SK
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
OK=1
cat "$DIR/env"
