#!/usr/bin/env bash
# Long fault-injection run of a real nacos-node cluster (tests/chaos.rs, test `long_run`):
# kill -9, SIGTERM, SIGSTOP pauses and network partitions against concurrent clients, then the
# suite's checks (no acknowledged write lost, linearizable history, converged replicas).
#
#   scripts/chaos.sh [--nodes N] [--seconds S] [--seed X] [--threads T] [--keys K]
#                    [--think-ms MS] [--netns auto|require|off] [--keep] [--debug]
#
# Defaults: 5 nodes, 600 s, a random seed (printed), release build. Partitions need root, `ip
# netns` and iptables (`apt-get install -y iptables iproute2`); without them the run says so and
# uses the other faults. The whole output is also written to a log file whose path is printed
# at the end. A failing run prints its seed, keeps its history file and node logs, and prints
# the command that repeats it. docs/testing.md explains the report.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

nodes=5 seconds=600 seed="" threads="" keys="" think="" netns="" keep="" profile="--release"
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes="${2:?--nodes needs a value}"; shift 2 ;;
        --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
        --seed) seed="${2:?--seed needs a value}"; shift 2 ;;
        --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
        --keys) keys="${2:?--keys needs a value}"; shift 2 ;;
        --think-ms) think="${2:?--think-ms needs a value}"; shift 2 ;;
        --netns) netns="${2:?--netns needs a value}"; shift 2 ;;
        --keep) keep=1; shift ;;
        --debug) profile=""; shift ;;
        -h|--help) usage ;;
        *) echo "chaos.sh: unknown argument: $1" >&2; usage ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "chaos.sh: not root: network partitions will be skipped (the run says so)" >&2
elif ! command -v iptables >/dev/null; then
    echo "chaos.sh: iptables missing: network partitions will be skipped; apt-get install -y iptables" >&2
fi

export CHAOS_NODES="$nodes" CHAOS_SECONDS="$seconds"
[ -n "$seed" ] && export CHAOS_SEED="$seed"
[ -n "$threads" ] && export CHAOS_THREADS="$threads"
[ -n "$keys" ] && export CHAOS_KEYS="$keys"
[ -n "$think" ] && export CHAOS_THINK_MS="$think"
[ -n "$netns" ] && export CHAOS_NETNS="$netns"
[ -n "$keep" ] && export CHAOS_KEEP=1

log="${TMPDIR:-/tmp}/nacos-chaos-$(date +%Y%m%d-%H%M%S)-$$.log"
echo "chaos.sh: $nodes nodes, $seconds s${seed:+, seed $seed}; output also in $log" >&2
set +e
# shellcheck disable=SC2086 # $profile is empty or one flag
cargo test $profile --test chaos -- --ignored --exact long_run --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "chaos.sh: exit status $status; full output in $log" >&2
exit "$status"
