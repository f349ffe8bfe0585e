#!/usr/bin/env python3
"""A burst against a running host agent: N creates at once from one client, while another
client lists the VMs (GET /v1/vms) as fast as it can. Prints the statuses of the creates and
the latency of the listings. BENCHMARKS.md has the figures and how they were taken.

usage: agent-burst.py AGENT_SOCKET PROBE_KERNEL N
(the VMs it creates are v0..v<N-1>; remove them afterwards, e.g. `smartvm rm -f` each)
"""
import asyncio, json, sys, time
SOCK = sys.argv[1]; KERNEL = sys.argv[2]; N = int(sys.argv[3])
async def request(method, path, body=b""):
    r, w = await asyncio.open_unix_connection(SOCK)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    w.write(head.encode() + body); await w.drain()
    data = await r.read(); w.close()
    code = int(data.split(b" ", 2)[1])
    if code == 500:
        print(data.split(b"\r\n\r\n", 1)[1][:400].decode(errors="replace"))
    return code
async def create(k):
    cfg = {"id": f"v{k}", "bootSource": {"kernelImagePath": KERNEL, "bootArgs": "console=ttyS0 probe.halt"}, "machineConfig": {"vcpuCount": 1, "memSizeMib": 16}}
    return await request("POST", "/v1/vms", json.dumps(cfg).encode())
async def poll(stop, out):
    while not stop.is_set():
        t = time.monotonic(); await request("GET", "/v1/vms"); out.append(time.monotonic() - t)
async def main():
    stop = asyncio.Event(); lat = []
    poller = asyncio.create_task(poll(stop, lat))
    codes = await asyncio.gather(*(create(k) for k in range(N)))
    stop.set(); await poller
    lat.sort()
    print(f"{N} creates at once: statuses {dict((c, codes.count(c)) for c in set(codes))}")
    print(f"GET /v1/vms during them: n={len(lat)} median {lat[len(lat)//2]*1000:.1f} ms p95 {lat[int(len(lat)*0.95)]*1000:.1f} ms max {lat[-1]*1000:.1f} ms")
asyncio.run(main())
