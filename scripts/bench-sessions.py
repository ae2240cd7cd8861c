#!/usr/bin/env python3
# Throughput and memory of writes with and without request ids (docs/benchmarks.md).
# Usage, from the repository root: python3 scripts/bench-sessions.py plain|ids PORT COUNT
import subprocess, time, json, http.client, threading, sys, tempfile, shutil
mode=sys.argv[1]; port=int(sys.argv[2]); n=int(sys.argv[3])
work=tempfile.mkdtemp(prefix="bench-sessions-")
p=subprocess.Popen(["target/release/nacos-node","--listen",f"127.0.0.1:{port}","--data-dir",f"{work}/data"],stderr=open(f"{work}/node.log","w"))
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
for _ in range(100):
    try:
        c=http.client.HTTPConnection("127.0.0.1",port,timeout=2); c.request("GET","/v1/health"); c.getresponse().read(); break
    except Exception: time.sleep(0.05)
body=json.dumps({"key":"k","value":"v"})
THREADS=16
def worker(t):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=10)
    for i in range(t, n, THREADS):
        h={"Content-Type":"application/json"}
        if mode=="ids": h["X-Request-Id"]=f"client-{i}:1"
        c.request("POST","/v1/datum",body,h); r=c.getresponse(); r.read()
        assert r.status==200, r.status
time.sleep(1)
r0=rss(); t0=time.time()
ts=[threading.Thread(target=worker,args=(t,)) for t in range(THREADS)]
[t.start() for t in ts]; [t.join() for t in ts]
dt=time.time()-t0; time.sleep(2); r1=rss()
print(mode, f"{n/dt:.0f} writes/s", f"rss {r0} -> {r1} KiB", f"{(r1-r0)*1024/n:.0f} bytes per write")
p.terminate(); p.wait()
shutil.rmtree(work)
