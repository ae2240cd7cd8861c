#!/usr/bin/env bash
# scripts/bench-slow-leader.sh [CONNECTIONS...]: puts against a 3-member cluster whose
# leader's disk is slow and whose followers' are not (docs/benchmarks.md, "Answers that do
# not wait for the leader's own disk").
#
# Every member's data dir is on tmpfs (/dev/shm); member 0 runs with a small LD_PRELOAD
# shim (compiled here with gcc) that adds SLOW_SYNC_US microseconds (default 3000) to each
# of its fsync and fdatasync calls, and leadership is moved to it. Then, for each number of
# connections (default 1 16), two 8 s runs of wrk with 256-byte values over 1,000 keys
# against the leader. Needs gcc and wrk (../shared/bench/vs-etcd.sh installs wrk).
#
# Environment: NACOS_BIN_DIR (default: cargo build --release), BASE_PORT (default 19300),
# SLOW_SYNC_US.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
conns=("$@")
[ ${#conns[@]} -gt 0 ] || conns=(1 16)
base_port=${BASE_PORT:-19300}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "gcc is needed" >&2; exit 2; }
if [ -z "${NACOS_BIN_DIR:-}" ]; then
  (cd "$repo" && cargo build --release -q)
  NACOS_BIN_DIR=$repo/target/release
fi
work=$(mktemp -d /dev/shm/nacos-slow-leader.XXXXXX)
cluster=$work/cluster
cleanup() {
  CLUSTER_DIR=$cluster BASE_PORT=$base_port NACOS_BIN_DIR=$work/bin \
    "$repo/scripts/cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/slowsync.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
/* Adds SLOW_SYNC_US microseconds to every fsync and fdatasync of the process. */
static void slow(void) {
  const char *s = getenv("SLOW_SYNC_US");
  long us = s ? atol(s) : 0;
  struct timespec t = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&t, 0);
}
int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow();
  return real(fd);
}
int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow();
  return real(fd);
}
EOF
gcc -shared -fPIC -O2 -o "$work/slowsync.so" "$work/slowsync.c" -ldl

# The members start from a wrapper that slows member 0 only.
mkdir -p "$work/bin"
cp "$NACOS_BIN_DIR/nacosctl" "$work/bin/"
cat >"$work/bin/nacos-node" <<EOF
#!/bin/sh
case "\$*" in
  *"$cluster/node-0 "*) export LD_PRELOAD=$work/slowsync.so SLOW_SYNC_US=${SLOW_SYNC_US:-3000} ;;
esac
exec "$NACOS_BIN_DIR/nacos-node" "\$@"
EOF
chmod +x "$work/bin/nacos-node"

CLUSTER_DIR=$cluster BASE_PORT=$base_port NACOS_BIN_DIR=$work/bin \
  "$repo/scripts/cluster.sh" up 3 >/dev/null
endpoints=$(cat "$cluster/endpoints")
slow=127.0.0.1:$base_port
NACOS_CLUSTER_TOKEN=$(cat "$cluster/cluster.token") \
  "$work/bin/nacosctl" --endpoints "$endpoints" transfer-leader "$slow" >/dev/null

cat >"$work/put.lua" <<'EOF'
local v = string.rep("x", 256)
local put = {}
for i = 0, 999 do put[i] = '{"key":"bench/k' .. i .. '","value":"' .. v .. '"}' end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/datum", {["Content-Type"]="application/json"}, put[n % 1000])
end
EOF
echo "leader $slow: every fsync ${SLOW_SYNC_US:-3000} us slower; followers on tmpfs"
for c in "${conns[@]}"; do
  wrk -t1 -c"$c" -d2s -s "$work/put.lua" "http://$slow" >/dev/null
  for run in 1 2; do
    out=$(wrk -t1 -c"$c" -d8s --latency -s "$work/put.lua" "http://$slow")
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    lat=$(echo "$out" | awk '$1 ~ /^(50|90|99)%$/ {printf "p%s %s  ", $1, $2}')
    echo "connections $c, run $run: $rate writes/s  $lat"
  done
done
