"""GetJobLogs (gRPC) next to the SSE log stream (/v1, HTTPS): MB/s of one job's whole log to
one client and to ten at once, both read by Python clients in this process (grpcio; http.client
over TLS), so the ratio compares the doors, not the clients. Run by scripts/bench-logs.sh."""
import http.client
import json
import ssl
import sys
import threading
import time

import grpc

http_addr, grpc_addr, certs, gen, job_id, size = sys.argv[1:7]
size = int(size)
sys.path.insert(0, gen)
import joblet_pb2 as pb  # noqa: E402
import joblet_pb2_grpc as rpc  # noqa: E402


def read(name):
    with open(f"{certs}/{name}", "rb") as f:
        return f.read()


def grpc_once():
    creds = grpc.ssl_channel_credentials(read("ca.pem"), read("admin.key"), read("admin.pem"))
    ch = grpc.secure_channel(grpc_addr, creds, options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.max_receive_message_length", 8 << 20)])
    n = 0
    for chunk in rpc.JobletServiceStub(ch).GetJobLogs(pb.GetJobLogsReq(id=job_id)):
        n += len(chunk.payload)
    ch.close()
    return n


def sse_once():
    ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
    ctx.load_cert_chain(f"{certs}/admin.pem", f"{certs}/admin.key")
    host, port = http_addr.rsplit(":", 1)
    c = http.client.HTTPSConnection("localhost", int(port), context=ctx)
    c.request("GET", f"/v1/jobs/{job_id}/logs/stream")
    r = c.getresponse()
    n = 0
    # Each event's data is JSON {"text": ...}: count the log bytes it carries.
    for line in r:
        if line.startswith(b"data: "):
            d = json.loads(line[6:])
            n += len((d.get("text") or "").encode())
        if line.startswith(b"event: end"):
            break
    c.close()
    return n


def run(fn, clients):
    got = [0] * clients
    def one(i):
        got[i] = fn()
    t0 = time.perf_counter()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    assert all(g >= size for g in got), (fn.__name__, got, size)
    return sum(got) / dt / 1e6


for clients in (1, 10):
    runs = 3
    g = sorted(run(grpc_once, clients) for _ in range(runs))[runs // 2]
    s = sorted(run(sse_once, clients) for _ in range(runs))[runs // 2]
    print(f"{clients:>2} client(s): GetJobLogs {g:8.1f} MB/s   SSE {s:8.1f} MB/s   "
          f"gRPC/SSE {g / s:5.2f}x   (median of {runs}, {size >> 20} MiB log)")
