#!/usr/bin/env bash
# Failover benchmark: a 3-node cluster with default timings; RUNS times, kill -9 the leader
# while a client writes continuously through the survivors, and measure the time from the
# kill to the first acknowledged write after it. Prints each run and the median.
# Usage: scripts/bench-failover.sh [RUNS]   (default 10)
set -euo pipefail
# Members of a cluster need a shared secret; this one lives only in this run's environment.
export NACOS_CLUSTER_TOKEN="${NACOS_CLUSTER_TOKEN:-bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
cd "$(dirname "$0")/.."
RUNS=${1:-10}
cargo build --release -q
work=$(mktemp -d /tmp/nacos-failover.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$RUNS" "$work" <<'PY'
import json, os, signal, socket, subprocess, sys, time, urllib.request, urllib.error

runs, work = int(sys.argv[1]), sys.argv[2]
node_bin = "target/release/nacos-node"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
procs = {}

def start(a):
    i = addrs.index(a)
    log = open(f"{work}/n{i}.log", "ab")
    procs[a] = subprocess.Popen([node_bin, "--listen", a, "--data-dir", f"{work}/n{i}",
                                 "--peers", ",".join(addrs)], stderr=log)

def call(a, method, path, body=None, timeout=1.0):
    req = urllib.request.Request(f"http://{a}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())

def leader():
    for a in addrs:
        try:
            l = call(a, "GET", "/v1/leader", timeout=0.3).get("leader")
            if l and procs.get(l) and procs[l].poll() is None:
                return l
        except Exception:
            pass
    return None

for a in addrs:
    start(a)
times = []
try:
    for run in range(runs):
        deadline = time.time() + 20
        while (l := leader()) is None and time.time() < deadline:
            time.sleep(0.02)
        survivors = [a for a in addrs if a != l]
        call(survivors[0], "POST", "/v1/datum", {"key": "failover", "value": run}, timeout=5)
        procs[l].send_signal(signal.SIGKILL); procs[l].wait()
        t0 = time.perf_counter()
        done, k = False, 0
        while not done and time.perf_counter() - t0 < 20:
            a = survivors[k % 2]; k += 1
            try:
                call(a, "POST", "/v1/datum", {"key": "failover", "value": run}, timeout=2)
                done = True
            except (urllib.error.HTTPError, urllib.error.URLError, OSError):
                time.sleep(0.005)
        ms = (time.perf_counter() - t0) * 1000
        times.append(ms)
        print(f"run {run + 1}: writes resumed {ms:.0f} ms after kill -9 of the leader", flush=True)
        start(l)
        time.sleep(1.5)  # the restarted member catches up before the next kill
finally:
    for p in procs.values():
        if p.poll() is None:
            p.kill(); p.wait()
times.sort()
mid = len(times) // 2
median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
print(f"median {median:.0f} ms, min {times[0]:.0f} ms, max {times[-1]:.0f} ms over {len(times)} runs")
PY
