#!/usr/bin/python3
"""The asyncio and uvloop peers of loopbench (/work/shared/bench/WORKLOADS.md).

    python3 asyncio_peer.py --loop=asyncio|uvloop --run=WORKLOAD
        WORKLOAD: callbacks, tasks, sleep_chain, timers, queue or lock; prints
        one JSON line, exits 1 if its check failed
    python3 asyncio_peer.py --loop=asyncio|uvloop --serve=echo|http [--port=N]
        prints "listening on 127.0.0.1:PORT", serves until SIGTERM or SIGINT,
        then exits 0

The workloads are written as an asyncio program would write them; the servers
are Protocols (the fastest way asyncio and uvloop serve a socket), with the
same 64 KiB receive size as examples/echo_server, and the same answers as
examples/http_hello. --loop=uvloop runs the same code on uvloop's loop
(Debian's python3-uvloop); exit status 3 if it is not installed.
"""

import asyncio
import json
import resource
import signal
import sys
import time

RUSAGE_SELF = resource.RUSAGE_SELF


def peak_rss_kib():
    return resource.getrusage(RUSAGE_SELF).ru_maxrss


def current_rss_kib():
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * resource.getpagesize() / 1024


# --- the core workloads -------------------------------------------------------


def callbacks(loop, record):
    n = 2_000_000
    state = [0]

    def chain():
        if state[0] >= n:
            return  # another chain reached N first
        state[0] += 1
        if state[0] < n:
            loop.call_soon(chain)
        else:
            loop.stop()

    t0 = time.perf_counter()
    for _ in range(100):
        loop.call_soon(chain)
    loop.run_forever()
    record(n, time.perf_counter() - t0, state[0] == n)


async def one_task(i):
    await asyncio.sleep(0)
    return i


def tasks(loop, record):
    t = 100_000

    async def spawn_and_gather():
        return await asyncio.gather(*[loop.create_task(one_task(i)) for i in range(t)])

    rss_before = current_rss_kib()
    t0 = time.perf_counter()
    results = loop.run_until_complete(spawn_and_gather())
    seconds = time.perf_counter() - t0
    bytes_per_task = (peak_rss_kib() - rss_before) * 1024 / t
    ok = results == list(range(t)) and sum(results) == t * (t - 1) // 2
    record(t, seconds, ok, bytes_per_task=bytes_per_task)


def sleep_chain(loop, record):
    n = 1_000_000

    async def sleeper():
        yields = 0
        for _ in range(n):
            await asyncio.sleep(0)
            yields += 1
        return yields

    t0 = time.perf_counter()
    yields = loop.run_until_complete(sleeper())
    record(n, time.perf_counter() - t0, yields == n)


def timers(loop, record):
    k = 200_000
    late_us = []
    early = [0]

    def fired(due):
        lateness = loop.time() - due
        if lateness < 0:
            early[0] += 1
        late_us.append(lateness * 1e6)
        if len(late_us) == k:
            loop.stop()

    t0 = time.perf_counter()
    for i in range(k):
        delay = (i * 7919 % 200_000) / 1e6
        loop.call_later(delay, fired, loop.time() + delay)
    scheduled = time.perf_counter()
    loop.run_forever()
    seconds = time.perf_counter() - t0
    late_us.sort()
    record(k, seconds, len(late_us) == k and early[0] == 0,
           overhead_ms=seconds * 1e3 - 200.0,
           late_p50_us=late_us[len(late_us) // 2],
           late_p99_us=late_us[len(late_us) * 99 // 100],
           schedule_ms=(scheduled - t0) * 1e3)


def queue(loop, record):
    n = 1_000_000

    async def produce(q):
        for i in range(n):
            await q.put(i)

    async def consume(q):
        in_order, total = True, 0
        for i in range(n):
            v = await q.get()
            in_order = in_order and v == i
            total += v
        return in_order and total == n * (n - 1) // 2

    async def main():
        q = asyncio.Queue(maxsize=128)
        producer = loop.create_task(produce(q))
        ok = await consume(q)
        await producer
        return ok

    t0 = time.perf_counter()
    ok = loop.run_until_complete(main())
    record(n, time.perf_counter() - t0, ok)


def lock(loop, record):
    tasks_n, rounds = 100, 10_000
    n = tasks_n * rounds
    state = {"counter": 0, "holders": 0, "overlap": False}
    the_lock = asyncio.Lock()

    async def user():
        for _ in range(rounds):
            async with the_lock:
                state["holders"] += 1
                state["overlap"] = state["overlap"] or state["holders"] != 1
                state["counter"] += 1
                await asyncio.sleep(0)
                state["overlap"] = state["overlap"] or state["holders"] != 1
                state["holders"] -= 1

    async def main():
        await asyncio.gather(*[user() for _ in range(tasks_n)])

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    record(n, time.perf_counter() - t0, state["counter"] == n and not state["overlap"])


CORE = {f.__name__: f for f in (callbacks, tasks, sleep_chain, timers, queue, lock)}


# --- the servers --------------------------------------------------------------

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
      b"Hello, World!")
NOT_FOUND = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
             b"\r\nNot Found\n")
NOT_ALLOWED = (b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 19\r\n\r\nMethod Not Allowed\n")
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
               b"Connection: close\r\n\r\nBad Request\n")
MAX_HEAD = 8 * 1024


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=64 * 1024)

    def data_received(self, data):
        self.transport.write(data)

    # The client stopped reading: stop reading from it too (as polyloop's
    # echo server waits in drain()).
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def asks_to_close(headers):
    """Whether the header lines hold a Connection header listing "close"."""
    for line in headers.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"connection" and any(
                token.strip(b" \t").lower() == b"close" for token in value.split(b",")):
            return True
    return False


def answer_for(head):
    """The answer to one request head, and whether to close after it (HTTP/1.0
    or "Connection: close"); None if it is not an HTTP/1.x request."""
    eol = head.find(b"\r\n")
    parts = head[:eol].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or parts[2] not in (b"HTTP/1.1",
                                                                          b"HTTP/1.0"):
        return None
    method, target = parts[0], parts[1]
    close_after = parts[2] == b"HTTP/1.0" or asks_to_close(head[eol + 2:])
    if method not in (b"GET", b"HEAD"):
        answer = NOT_ALLOWED
    else:
        answer = OK if target == b"/" else NOT_FOUND
    if method == b"HEAD":
        answer = answer[:answer.find(b"\r\n\r\n") + 4]
    return answer, close_after


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        data = self.pending + data if self.pending else data
        answers = []
        start = 0
        bad = finish = False
        while not finish:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            answer = answer_for(data[start:end + 4])
            if answer is None:
                bad = True
                break
            answers.append(answer[0])
            finish = answer[1]
            start = end + 4
        self.pending = data[start:]
        if not finish and len(self.pending) > MAX_HEAD:
            bad = True
        if bad:
            answers.append(BAD_REQUEST)
        self.transport.write(b"".join(answers) if len(answers) != 1 else answers[0])
        if bad or finish:
            self.transport.close()  # once the answers are sent

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def serve(loop, what, port):
    # asyncio's and uvloop's TCP transports set TCP_NODELAY themselves.
    protocol = Http if what == "http" else Echo
    server = loop.run_until_complete(
        loop.create_server(protocol, "127.0.0.1", port, backlog=1024))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    loop.run_forever()
    server.close()
    return 0


def main(argv):
    options = {}
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        if name not in ("--loop", "--run", "--serve", "--port") or not value:
            print(f"asyncio_peer: bad argument '{arg}'\nusage: asyncio_peer.py "
                  "--loop=asyncio|uvloop (--run=WORKLOAD | --serve=echo|http [--port=N])",
                  file=sys.stderr)
            return 2
        options[name[2:]] = value
    name = options.get("loop", "asyncio")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("asyncio_peer: uvloop is not installed: run tools/install_deps.sh --peers "
                  "(or apt-get install python3-uvloop)", file=sys.stderr)
            return 3
        loop = uvloop.new_event_loop()
    elif name == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        print(f"asyncio_peer: unknown loop '{name}' (asyncio or uvloop)", file=sys.stderr)
        return 2
    asyncio.set_event_loop(loop)
    if "serve" in options and options["serve"] in ("echo", "http"):
        return serve(loop, options["serve"], int(options.get("port", "0")))
    workload = options.get("run")
    if workload not in CORE:
        print(f"asyncio_peer: unknown workload '{workload}' ({', '.join(CORE)})",
              file=sys.stderr)
        return 2
    result = {}

    def record(n, seconds, ok, **extra):
        result.update(workload=workload, backend=name, n=n, seconds=round(seconds, 6),
                      ns_per_op=round(seconds * 1e9 / n, 3))
        result.update({k: round(v, 3) for k, v in extra.items()})
        result.update(peak_rss_kib=peak_rss_kib(), ok=ok)

    CORE[workload](loop, record)
    loop.close()
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
