#!/usr/bin/env bash
# Membership benchmark: a 3-member cluster on loopback (release build, fsync on) is loaded
# with N keys. Then
#   1. a new member started with --join is added (`nacosctl member add --wait`): the time from
#      the command until it is a voter, and until it has applied the leader's commit index;
#   2. the same writes twice (`nacosctl bench put`, 16 clients, about 10 s): alone, then with
#      a follower replaced by another new member 1 s into them (`nacosctl member replace`):
#      the writes' latency, the longest write, and whether any failed.
# Usage: scripts/bench-membership.sh [N]   (default 100000; copy the results into
# docs/benchmarks.md). NODE_ARGS adds nacos-node flags; KEEP=1 keeps the data and logs.
set -euo pipefail
export NACOS_CLUSTER_TOKEN="${NACOS_CLUSTER_TOKEN:-bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
cd "$(dirname "$0")/.."
N=${1:-100000}
cargo build --release -q
BIN=target/release
work=$(mktemp -d /tmp/nacos-membership.XXXXXX)
pids=("" "" "" "" "")
cleanup() {
  for p in "${pids[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
read -r -a ports < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
addr() { echo "127.0.0.1:${ports[$1]}"; }
peers="$(addr 0),$(addr 1),$(addr 2)"
start() { # start I --peers LIST | --join LIST
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  "$BIN/nacos-node" --listen "$(addr "$1")" "$2" "$3" --data-dir "$work/n$1" \
    ${NODE_ARGS:-} 2>>"$work/n$1.log" &
  pids[$1]=$!
}
field() { curl -sf "http://$1/v1/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

for i in 0 1 2; do start "$i" --peers "$peers"; done
until "$BIN/nacosctl" --endpoints "$peers" --timeout 1s leader >/dev/null 2>&1; do sleep 0.05; done
echo "loading $N keys (64 clients)..."
"$BIN/nacosctl" --endpoints "$peers" --timeout 30s bench put --clients 64 --requests "$N" --keys "$N" --value-size 64
leader=$("$BIN/nacosctl" --endpoints "$peers" --timeout 2s leader)
commit=$(field "$leader" commit_index)
# A cluster at rest, as when an operator adds a member: every member has written the datum
# files of the load and a checkpoint at its end (right after a bulk load the members are
# still creating 100,000 datum files, and a join then competes with them for the disk).
for i in 0 1 2; do
  until grep -q "checkpoint at index $commit:" "$work/n$i.log"; do sleep 0.2; done
done

echo "1. adding $(addr 3) (started with --join) to a cluster at commit index $commit"
start 3 --join "$peers"
until curl -sf "http://$(addr 3)/v1/health" >/dev/null; do sleep 0.02; done
t0=$(date +%s%N)
"$BIN/nacosctl" --endpoints "$peers" --timeout 10s member add "$(addr 3)" --wait
voter_ms=$(ms_since "$t0")
until [ "$(field "$(addr 3)" applied_index 2>/dev/null || echo 0)" -ge "$commit" ]; do sleep 0.02; done
echo "   a voter after $voter_ms ms; applied index $commit after $(ms_since "$t0") ms"
"$BIN/nacosctl" --endpoints "$peers" -o table member list
grep -h -i "snapshot\|configuration changed" "$work"/n*.log | tail -n 4 | sed 's/^/   /'
"$BIN/nacosctl" --endpoints "$peers,$(addr 3)" --timeout 10s member remove "$(addr 3)"

leader=$("$BIN/nacosctl" --endpoints "$peers" --timeout 2s leader)
old=0
while [ "$(addr "$old")" = "$leader" ]; do old=$((old + 1)); done
writes() { # the same writes as during the replace: 16 clients on the leader
  "$BIN/nacosctl" --endpoints "$leader" --timeout 10s bench put --clients 16 \
    --requests "${WRITES:-20000}" --keys 1000 --value-size 256
}
echo "2a. the writes alone (the baseline for 2b)"
echo "   $(writes)"
echo "2b. replacing follower $(addr "$old") by $(addr 4) under the same writes"
start 4 --join "$peers"
until curl -sf "http://$(addr 4)/v1/health" >/dev/null; do sleep 0.02; done
# About 10 s of writes on this machine; the replace starts 1 s into them.
writes >"$work/bench.txt" 2>&1 &
bench=$!
sleep 1
t0=$(date +%s%N)
"$BIN/nacosctl" --endpoints "$peers" --timeout 10s member replace "$(addr "$old")" "$(addr 4)"
echo "   replace took $(ms_since "$t0") ms"
wait "$bench" || true
echo "   writes during it: $(cat "$work/bench.txt")"
grep -h -i "snapshot\|configuration changed" "$work"/n*.log | tail -n 8 | sed 's/^/   /'
"$BIN/nacosctl" --endpoints "$leader,$(addr 4)" -o table member list
