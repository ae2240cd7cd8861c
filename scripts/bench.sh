#!/usr/bin/env bash
# Measures a standalone node and a 3-node loopback cluster with `nacosctl bench`, plus the
# whole-process time of `nacosctl put`. Release build, fsync on, data in a temp dir.
# Usage: scripts/bench.sh [REQUESTS]   (prints results; copy them into docs/benchmarks.md)
set -euo pipefail
# Members of a cluster need a shared secret; this one lives only in this run's environment.
export NACOS_CLUSTER_TOKEN="${NACOS_CLUSTER_TOKEN:-bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
cd "$(dirname "$0")/.."
N=${1:-5000}
cargo build --release -q
BIN=target/release
work=$(mktemp -d /tmp/nacos-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_leader() {
  for _ in $(seq 200); do
    "$BIN/nacosctl" --endpoints "$1" --timeout 1s leader >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "no leader at $1" >&2; return 1
}
bench() { "$BIN/nacosctl" --endpoints "$1" --timeout 10s bench "${@:2}"; }

echo "== standalone"
p=$(free_port); ep=127.0.0.1:$p
"$BIN/nacos-node" --listen "$ep" --data-dir "$work/solo" 2>"$work/solo.log" & pids+=($!)
wait_leader "$ep"
bench "$ep" put --clients 1 --requests "$N"
bench "$ep" put --clients 64 --requests $((N * 4))
echo "nacosctl put, whole process, 200 runs:"
python3 - "$BIN/nacosctl" "$ep" <<'PY'
import subprocess, sys, time
ctl, ep = sys.argv[1], sys.argv[2]
ts = []
for i in range(200):
    t = time.perf_counter()
    subprocess.run([ctl, "--endpoints", ep, "put", "proc-bench", str(i)], check=True, stdout=subprocess.DEVNULL)
    ts.append(time.perf_counter() - t)
ts.sort()
print("  p50 %.2f ms, p90 %.2f ms, min %.2f ms" % (ts[100] * 1e3, ts[180] * 1e3, ts[0] * 1e3))
PY

echo "== 3-node cluster"
ports=($(free_port) $(free_port) $(free_port))
peers=127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}
for i in 0 1 2; do
  "$BIN/nacos-node" --listen 127.0.0.1:${ports[$i]} --data-dir "$work/n$i" --peers "$peers" 2>"$work/n$i.log" & pids+=($!)
done
wait_leader "$peers"
leader=$("$BIN/nacosctl" --endpoints "$peers" -o json leader | python3 -c 'import json,sys;print(json.load(sys.stdin)["leader"])')
echo "leader: $leader"
bench "$leader" put --clients 1 --requests "$N"
bench "$leader" put --clients 64 --requests $((N * 4))
bench "$leader" get --clients 64 --requests $((N * 4))
bench "$leader" get --clients 64 --requests $((N * 4)) --stale
