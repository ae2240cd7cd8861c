#!/usr/bin/env bash
# Restart-at-scale benchmark: loads N keys through the normal write path into a standalone
# node (release build, fsync on), then measures how long a restart takes until a
# linearizable read is served: after kill -9 right at the end of the load (the most log to
# replay), after a clean stop (SIGTERM), and after kill -9 of an idle node. Also reports the
# node's resident memory per key, the data directory's size and the node's checkpoint lines.
# Usage: scripts/bench-restart.sh [N]   (default 1000000; copy the results into docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
cargo build --release -q
BIN=target/release
work=$(mktemp -d /tmp/nacos-restart.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
ep=127.0.0.1:$port

start() { "$BIN/nacos-node" --listen "$ep" --data-dir "$work/data" 2>>"$work/node.log" & pid=$!; }
# Milliseconds from now until a linearizable read of a loaded key succeeds.
time_to_serve() {
  local t0; t0=$(date +%s%N)
  until "$BIN/nacosctl" --endpoints "$ep" --timeout 1s get bench/0 >/dev/null 2>&1; do sleep 0.01; done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
sizes() { echo "data dir $(du -sh "$work/data" | cut -f1), of which log $(du -sh "$work/data/log" | cut -f1), checkpoint $(du -sh "$work/data/checkpoint" 2>/dev/null | cut -f1)"; }

start
until "$BIN/nacosctl" --endpoints "$ep" --timeout 1s leader >/dev/null 2>&1; do sleep 0.01; done
echo "loading $N keys (64 clients)..."
"$BIN/nacosctl" --endpoints "$ep" --timeout 30s bench put --clients 64 --requests "$N" --keys "$N" --value-size 64
rss_kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
echo "resident memory with $N keys: $((rss_kb / 1024)) MiB = $((rss_kb * 1024 / N)) bytes per key"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "at kill -9 right after the load: $(sizes)"
start; echo "restart after kill -9 at the end of the load: serving in $(time_to_serve) ms"

kill -TERM "$pid"; wait "$pid" || true
echo "after a clean stop: $(sizes)"
start; echo "restart after SIGTERM: serving in $(time_to_serve) ms"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start; echo "restart after kill -9 of the idle node: serving in $(time_to_serve) ms"
rss_kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
echo "resident memory after the restart: $((rss_kb / 1024)) MiB = $((rss_kb * 1024 / N)) bytes per key"
echo "checkpoints (node log):"
grep -E "checkpoint|datum files after" "$work/node.log" | tail -n 8
