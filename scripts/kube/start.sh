#!/usr/bin/env bash
# kube/start.sh DIR: a throw-away etcd + kube-apiserver on free loopback
# ports, state in DIR (etcd data, PKI, logs in DIR/log). Waits for /readyz and
# writes DIR/env, which it also prints:
#
#   export KUBECONFIG=DIR/kubeconfig            (admin: O=system:masters)
#   export KUBE_TEST_KUBECONFIG=DIR/kubeconfig  (what the tests read)
#   export KUBE_TEST_APISERVER=https://127.0.0.1:PORT
#   export KUBE_TEST_ETCD=http://127.0.0.1:PORT
#   export KUBE_TEST_STATE=DIR
#
# PIDs go to DIR/pids ("PID NAME" lines) for stop.sh. No controllers run:
# PVs and PVCs stay Pending until a test sets their status, deleted PVCs keep
# their protection finalizer, no default ServiceAccount appears (hence the
# ServiceAccount admission plugin is off). RBAC is enforced; privileged Pods
# are allowed (deploy/zrepl runs privileged).
#
# Env: KUBE_BIN (etcd, kube-apiserver; default: what build.sh prints),
#      KUBE_START_TIMEOUT (seconds to wait for /readyz, default 180).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LOG_TAG=kube
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

[[ $# == 1 ]] || die "usage: start.sh DIR"
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
if [[ -z ${KUBE_BIN:-} ]]; then
  eval "$(bash "$HERE/build.sh")"
fi
for b in etcd kube-apiserver; do [[ -x $KUBE_BIN/$b ]] || die "missing $KUBE_BIN/$b (scripts/kube/build.sh)"; done
for t in openssl curl ss; do command -v $t >/dev/null || die "needs $t (scripts/testenv deps kube)"; done
TIMEOUT=${KUBE_START_TIMEOUT:-180}
T0=$(date +%s.%N)

ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
API_PORT=$(free_port)
while [[ $ETCD_PEER_PORT == "$ETCD_PORT" ]]; do ETCD_PEER_PORT=$(free_port); done
while [[ $API_PORT == "$ETCD_PORT" || $API_PORT == "$ETCD_PEER_PORT" ]]; do API_PORT=$(free_port); done

# ------------------------------------------------------------ PKI (EC P-256: fast)
pki=$STATE/pki
mkdir -p "$pki" "$STATE/log"
cat >"$pki/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
CNF
(
  cd "$pki"
  umask 077
  for k in ca apiserver admin sa; do openssl ecparam -name prime256v1 -genkey -noout -out $k.key 2>/dev/null; done
  openssl req -x509 -new -config openssl.cnf -key ca.key -subj "/CN=cairn-test-ca" -days 3650 -extensions v3_ca -out ca.crt
  openssl req -new -config openssl.cnf -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile openssl.cnf -extensions v3_server -out apiserver.crt 2>/dev/null
  openssl req -new -config openssl.cnf -key admin.key -subj "/O=system:masters/CN=admin" -out admin.csr
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile openssl.cnf -extensions v3_client -out admin.crt 2>/dev/null
  openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
  tok=$(openssl rand -hex 16)
  echo "$tok,admin-token,admin-token-uid,system:masters" >tokens.csv
  echo "$tok" >admin.token
) || die "creating the PKI in $pki failed"

# ------------------------------------------------------------ etcd
: >"$STATE/pids"
"$KUBE_BIN/etcd" --name=cairn --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="cairn=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state=new \
  --unsafe-no-fsync --log-level=warn >"$STATE/log/etcd.log" 2>&1 </dev/null &
echo "$! etcd" >>"$STATE/pids"
etcd_pid=$!
deadline=$(($(date +%s) + TIMEOUT))
until curl -fsS -m 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
  if ! pid_alive "$etcd_pid" "$STATE/"; then
    tail -20 "$STATE/log/etcd.log" >&2
    die "etcd exited; log: $STATE/log/etcd.log"
  fi
  (($(date +%s) < deadline)) || die "etcd not healthy after ${TIMEOUT}s; log: $STATE/log/etcd.log"
  sleep 0.1
done
log "etcd healthy on 127.0.0.1:$ETCD_PORT after $(elapsed "$T0")s"

# ------------------------------------------------------------ kube-apiserver
# --endpoint-reconciler-type=none: v1.37 refuses a loopback advertise address
# with the default reconciler.
"$KUBE_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --endpoint-reconciler-type=none \
  --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --authorization-mode=RBAC \
  --disable-admission-plugins=ServiceAccount \
  --allow-privileged=true --profiling=false \
  >"$STATE/log/kube-apiserver.log" 2>&1 </dev/null &
api_pid=$!
echo "$api_pid kube-apiserver" >>"$STATE/pids"

umask 077
cat >"$STATE/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: cairn-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: cairn-test
  context: {cluster: cairn-test, user: admin}
current-context: cairn-test
KC

t1=$(date +%s.%N)
deadline=$(($(date +%s) + TIMEOUT))
until [[ $(curl -sS -m 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null) == ok ]]; do
  if ! pid_alive "$api_pid" "$STATE/"; then
    tail -30 "$STATE/log/kube-apiserver.log" >&2
    die "kube-apiserver exited; log: $STATE/log/kube-apiserver.log"
  fi
  (($(date +%s) < deadline)) || die "kube-apiserver not ready after ${TIMEOUT}s; log: $STATE/log/kube-apiserver.log"
  sleep 0.1
done
log "kube-apiserver ready on https://127.0.0.1:$API_PORT after $(elapsed "$t1")s (total $(elapsed "$T0")s)"

cat >"$STATE/env" <<ENV
export KUBECONFIG=$STATE/kubeconfig
export KUBE_TEST_KUBECONFIG=$STATE/kubeconfig
export KUBE_TEST_APISERVER=https://127.0.0.1:$API_PORT
export KUBE_TEST_ETCD=http://127.0.0.1:$ETCD_PORT
export KUBE_TEST_STATE=$STATE
ENV
cat "$STATE/env"
