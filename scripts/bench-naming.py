#!/usr/bin/env python3
"""Registrations per second through the Nacos Open API (POST /nacos/v1/ns/instance).

usage: bench-naming.py ADDR CLIENTS SECONDS shared|own

Each client holds one keep-alive connection to ADDR and registers new persistent
instances (127.0.0.1, ports counting up) in a loop: into one service shared by every
client (`shared`: compare-and-set collisions), or into a service of its own (`own`).
Prints registrations/s and latency percentiles; every answer must be `ok`.
"""
import http.client
import sys
import threading
import time
import urllib.parse

addr, clients, seconds, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
host, port = addr.split(":")
lat, errors, lock = [], [], threading.Lock()
stop_at = time.time() + seconds


def client(n):
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    service = "bench-shared" if mode == "shared" else f"bench-own-{n}"
    i, mine = 0, []
    while time.time() < stop_at:
        body = urllib.parse.urlencode({
            "serviceName": service, "ip": "127.0.0.1", "port": 1 + (n * 100000 + i) % 65535,
            "clusterName": f"c{n}-{i // 65535}", "ephemeral": "false"})
        t = time.perf_counter()
        conn.request("POST", "/nacos/v1/ns/instance", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        text = r.read()
        mine.append(time.perf_counter() - t)
        if r.status != 200 or text != b"ok":
            with lock:
                errors.append((r.status, text[:200]))
        i += 1
    with lock:
        lat.extend(mine)


threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
start = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.time() - start
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000
print(f"{mode} clients={clients}: {len(lat)} registrations in {took:.1f} s = "
      f"{len(lat) / took:.0f}/s, p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, errors {len(errors)}")
if errors:
    print("first error:", errors[0])
    sys.exit(1)
