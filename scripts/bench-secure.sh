#!/usr/bin/env bash
# scripts/bench-secure.sh: the cost of access control and TLS. For each mode (plain, auth,
# tls, tlsauth) starts a fresh 3-member cluster with scripts/cluster.sh (--tls for TLS),
# turns access control on for the auth modes (requests then carry root's token), and runs
# `wrk -t1 -dSECONDS` of 256-byte puts over 1,000 keys against the leader after a 3 s
# warm-up. Prints writes/s, p50, p99 and the leader's CPU per write (from /proc).
#
#   scripts/bench-secure.sh [ROUNDS] [CONNS] [SECONDS]     (defaults: 3 16 10)
#
# Needs wrk (apt-get install wrk). Uses ports from BASE_PORT (default 21000) upwards, and a
# scratch dir under ${TMPDIR:-/tmp}. Kills only the members it started (cluster.sh down).
set -euo pipefail
ROUNDS=${1:-3}; CONNS=${2:-16}; SECS=${3:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "bench-secure.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet --bin nacos-node --bin nacosctl)
B=${CARGO_TARGET_DIR:-$repo/target}/release
W=$(mktemp -d "${TMPDIR:-/tmp}/bench-secure.XXXXXX")
trap 'rm -rf "$W"' EXIT
cat >"$W/put.lua" <<'LUA'
local v = string.rep("x", 256)
local put = {}
for i = 0, 999 do put[i] = '{"key":"bench/k' .. i .. '","value":"' .. v .. '"}' end
local auth = os.getenv("BENCH_AUTH")
local n = 0
request = function()
  local h = {["Content-Type"]="application/json"}
  if auth then h["Authorization"] = auth end
  n = n + 1
  return wrk.format("POST", "/v1/datum", h, put[n % 1000])
end
LUA
port=${BASE_PORT:-21000}

one() { # MODE
  local mode=$1 dir="$W/$1-$port" tls="" scheme=http ca=()
  case $mode in tls*) tls=--tls scheme=https ;; esac
  CLUSTER_DIR=$dir BASE_PORT=$port NACOS_BIN_DIR=$B "$repo/scripts/cluster.sh" up 3 $tls >/dev/null
  [ -n "$tls" ] && ca=(--cacert "$dir/tls/ca.pem")
  local eps ctl leader pid token="" auth=""
  eps=$(cat "$dir/endpoints")
  ctl=("$B/nacosctl" --endpoints "$eps" "${ca[@]+"${ca[@]}"}")
  leader=$("${ctl[@]}" leader)
  case $mode in *auth)
    echo bench-root-pw | "${ctl[@]}" user add root --password-stdin >/dev/null
    "${ctl[@]}" auth enable >/dev/null
    token=$(curl -sfk -X POST "$scheme://$leader/v1/auth/login" \
      -d '{"user":"root","password":"bench-root-pw"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    auth="Bearer $token" ;;
  esac
  pid=""
  for f in "$dir"/node-*.pid; do
    p=$(cat "$f")
    if tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "--listen $leader "; then pid=$p; fi
  done
  BENCH_AUTH=$auth wrk -t1 -c"$CONNS" -d3s -s "$W/put.lua" "$scheme://$leader" >/dev/null
  local a b out
  a=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(BENCH_AUTH=$auth wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$W/put.lua" "$scheme://$leader")
  b=$(awk '{print $14+$15}' "/proc/$pid/stat")
  CLUSTER_DIR=$dir "$repo/scripts/cluster.sh" down >/dev/null
  echo "$out" | python3 -c '
import re, sys
mode, conns, ticks, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = sys.stdin.read()
n = int(re.search(r"(\d+) requests in", t).group(1))
rps = re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)
p50 = re.search(r"\s50%\s+(\S+)", t).group(1)
p99 = re.search(r"\s99%\s+(\S+)", t).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{mode:8} c={conns} {rps} writes/s p50 {p50} p99 {p99} leader CPU {ticks / tck * 1e6 / n:.0f} us/write" + (f" NON-2xx {bad.group(1)}" if bad else ""))
' "$mode" "$CONNS" "$((b - a))" "$(getconf CLK_TCK)"
  port=$((port + 10))
}

for r in $(seq 1 "$ROUNDS"); do
  for m in plain auth tls tlsauth; do
    printf 'round %s ' "$r"; one "$m"
  done
done
