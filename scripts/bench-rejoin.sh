#!/usr/bin/env bash
# Rejoin benchmark: a 3-member cluster on loopback (release build, fsync on) is loaded with N
# keys; then one follower is stopped, its data dir wiped (a replaced disk), and it is started
# again. Measures how long it takes to catch up (by snapshot, then the log) to the leader's
# commit index at the time of the restart, and prints what the members logged about it.
# Usage: scripts/bench-rejoin.sh [N]   (default 100000; copy the results into docs/benchmarks.md)
# NODE_ARGS adds nacos-node flags, e.g. NODE_ARGS="--log-segment-bytes 1048576" so that the
# leader's log is compacted and the member must catch up by snapshot.
set -euo pipefail
# Members of a cluster need a shared secret; this one lives only in this run's environment.
export NACOS_CLUSTER_TOKEN="${NACOS_CLUSTER_TOKEN:-bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
cd "$(dirname "$0")/.."
N=${1:-100000}
cargo build --release -q
BIN=target/release
work=$(mktemp -d /tmp/nacos-rejoin.XXXXXX)
pids=("" "" "")
cleanup() {
  for p in "${pids[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
read -r -a ports < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
addr() { echo "127.0.0.1:${ports[$1]}"; }
peers="$(addr 0),$(addr 1),$(addr 2)"
start() {
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  "$BIN/nacos-node" --listen "$(addr "$1")" --peers "$peers" --data-dir "$work/n$1" \
    ${NODE_ARGS:-} 2>>"$work/n$1.log" &
  pids[$1]=$!
}
field() { curl -sf "http://$1/v1/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

for i in 0 1 2; do start "$i"; done
until "$BIN/nacosctl" --endpoints "$peers" --timeout 1s leader >/dev/null 2>&1; do sleep 0.05; done
echo "loading $N keys (64 clients)..."
"$BIN/nacosctl" --endpoints "$peers" --timeout 30s bench put --clients 64 --requests "$N" --keys "$N" --value-size 64
leader=$("$BIN/nacosctl" --endpoints "$peers" --timeout 2s leader)
victim=0
while [ "$(addr "$victim")" = "$leader" ]; do victim=$((victim + 1)); done
kill -TERM "${pids[$victim]}"; wait "${pids[$victim]}" || true
rm -rf "$work/n$victim"
commit=$(field "$leader" commit_index)
echo "member $(addr "$victim") stopped and wiped; leader $leader at commit index $commit"
t0=$(date +%s%N)
start "$victim"
until [ "$(field "$(addr "$victim")" applied_index 2>/dev/null || echo 0)" -ge "$commit" ]; do sleep 0.05; done
echo "rejoined member caught up to index $commit in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
rss_kb=$(awk '/VmRSS/{print $2}' "/proc/${pids[$victim]}/status")
echo "its resident memory: $((rss_kb / 1024)) MiB"
echo "what the members logged:"
grep -h -i "snapshot\|datum files after" "$work"/n*.log | tail -n 6
echo "log segments on the leader: $(ls "$work/n$(for i in 0 1 2; do [ "$(addr "$i")" = "$leader" ] && echo "$i"; done)/log" | wc -l)"
