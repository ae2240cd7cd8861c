#!/usr/bin/env python3
"""Import and backup rates at N datums on a running cluster.

Usage: python3 scripts/bench-backup.py LEADER_ADDR N NACOSCTL DIR

Imports N datums (Nacos instance lists of about 300 bytes) through POST /v1/import in
requests of 1,000 (what `nacosctl import` sends), then times `nacosctl snapshot save`,
`snapshot status` and `snapshot restore`, and prints the rates and the file size per datum.
"""
import json, subprocess, sys, time, urllib.request

leader, n, ctl, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def value(i):
    return {"instanceList": [{"ip": "127.0.0.1", "port": 8000 + i % 1000, "weight": 1.0,
            "healthy": True, "enabled": True, "ephemeral": False, "clusterName": "DEFAULT",
            "serviceName": f"DEFAULT_GROUP@@svc-{i}", "metadata": {"zone": "a"}}]}

t0 = time.time()
for start in range(0, n, 1000):
    datums = [{"key": f"com.alibaba.nacos.naming.iplist.public##DEFAULT_GROUP@@svc-{i}",
               "value": value(i), "timestamp": 3} for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(f"http://{leader}/v1/import", data=json.dumps({"datums": datums}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        json.load(r)
t_import = time.time() - t0

def run(*args):
    t = time.time()
    subprocess.run([ctl, "--endpoints", leader, *args], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t

snap = f"{out}/bench.snap"
t_save = run("snapshot", "save", snap)
t_status = run("snapshot", "status", snap)
t_restore = run("snapshot", "restore", snap, "--data-dir", f"{out}/restored")
import os
size = os.path.getsize(snap)
print(f"import:  {n} datums in {t_import:.2f} s = {n / t_import:,.0f} datums/s")
print(f"save:    {t_save:.2f} s = {n / t_save:,.0f} datums/s")
print(f"status:  {t_status:.2f} s = {n / t_status:,.0f} datums/s")
print(f"restore: {t_restore:.2f} s = {n / t_restore:,.0f} datums/s")
print(f"file:    {size:,} bytes = {size / n:.0f} bytes per datum")
