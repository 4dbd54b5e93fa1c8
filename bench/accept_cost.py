#!/usr/bin/env python3
# Server CPU per accepted connection (docs/benchmarks.md, "multishot accept"):
# examples/echo_server pinned to CPU 0, this client on CPU 1, N connections
# (default 5000) opened in bursts of 50, each sends a byte, reads the echo and
# closes; server utime + stime from /proc (10 ms ticks) over N. Binaries given
# are run in turn, REPS (default 5) times, interleaved; BACKEND (io_uring).
#
#   N=15000 python3 bench/accept_cost.py /tmp/before/examples/echo_server \
#       bazel-bin/examples/echo_server
import os, re, socket, subprocess, sys, time
def run(binary, backend, n=int(os.environ.get("N", "5000"))):
    p = subprocess.Popen(["taskset", "-c", "0", binary, "--backend=" + backend, "--port=0"],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    port = int(re.search(r":(\d+)", line).group(1))
    os.sched_setaffinity(0, {1})
    def cpu():
        f = open(f"/proc/{p.pid}/stat").read().split(")")[1].split()
        return int(f[11]) + int(f[12])
    tick = os.sysconf("SC_CLK_TCK")
    # warm-up
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"x"); s.recv(1); s.close()
    c0 = cpu(); t0 = time.time()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
        if len(socks) == 50:
            for s in socks: s.sendall(b"x")
            for s in socks: s.recv(1); s.close()
            socks = []
    time.sleep(0.2)
    c1 = cpu()
    p.terminate(); p.wait()
    return (c1 - c0) / tick / n * 1e6
binaries = sys.argv[1:]
res = {b: [] for b in binaries}
for rep in range(int(os.environ.get("REPS", "5"))):
    for b in binaries:
        res[b].append(run(b, os.environ.get("BACKEND", "io_uring")))
for b, v in res.items():
    v.sort()
    print(b, "server CPU us per connection: median %.1f (min %.1f max %.1f)" % (v[len(v)//2], v[0], v[-1]), [round(x,1) for x in v])
