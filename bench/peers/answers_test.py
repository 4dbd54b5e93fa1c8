#!/usr/bin/python3
"""Each peer's echo and http server answers what polyloop's examples answer.

    answers_test.py HTTP_HELLO LIBUV_PEER ASIO_PEER ASYNCIO_PEER

(the programs' paths). The http answers of examples/http_hello (epoll backend) are the reference:
every peer must send the same bytes for GET /, HEAD /, an unknown target, a
POST, pipelined requests (in one send and split across sends), a line that
is not HTTP (400, then the connection closed), HTTP/1.0 and "Connection: close"
(answered, then closed) and "Connection: keep-alive" (left open). (nginx, which adds headers and
pages of its own, is held to GET /'s answer by loopbench_peers_test.) Every echo server must send back 200 KiB of varied bytes sent in
uneven pieces. A peer that is not installed (python3-uvloop, nginx) is
skipped with a line saying so (python3-uvloop); anything else that goes wrong
fails.
"""

import socket
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
failures = []


def start(command):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"{command[0]} said {line!r}, not 'listening on HOST:PORT'")
    port = int(line.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)


def stop(name, proc):
    proc.terminate()
    try:
        status = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        failures.append(f"{name}: did not exit within 5 s of SIGTERM")
        return
    if status != 0:
        failures.append(f"{name}: exited with status {status} on SIGTERM")


def exchange(port, pieces, until_closed=False, want=None):
    """Sends `pieces` (a short pause between them) and returns what came back:
    everything until the server closes (until_closed), or `want` bytes, or
    whatever arrived within 0.5 s of the last piece."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    got = b""
    for piece in pieces:
        s.sendall(piece)
        time.sleep(0.02)
    s.settimeout(0.5 if want is None and not until_closed else 5)
    try:
        while want is None or len(got) < want:
            data = s.recv(65536)
            if not data:
                break
            got += data
    except socket.timeout:
        if until_closed:
            got += b"<still open>"
    s.close()
    return got


HTTP_CASES = [
    ("GET /", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], False),
    ("HEAD /", [b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"], False),
    ("unknown target", [b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"], False),
    ("POST", [b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"], False),
    ("three pipelined in one send", [b"GET / HTTP/1.1\r\n\r\n" * 3], False),
    ("pipelined, split inside a head", [b"GET / HTTP/1.1\r\n\r\nGET / HT", b"TP/1.1\r\n\r\n"],
     False),
    ("not HTTP", [b"hello there\r\n\r\n"], True),
    ("HTTP/1.0: answered, then closed", [b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"],
     True),
    ("Connection: close, then closed",
     [b"GET / HTTP/1.1\r\nHost: x\r\nconnection: Keep-Alive, CLOSE\r\n\r\nGET / HTTP/1.1\r\n\r\n"],
     True),
    ("Connection: keep-alive stays open", [b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"],
     True),
]


def http_answers(port):
    return {name: exchange(port, pieces, until_closed)
            for name, pieces, until_closed in HTTP_CASES}


def check_echo(name, command):
    proc, port = start(command)
    try:
        payload = bytes((i * 7 + i // 251) % 256 for i in range(200 * 1024))
        pieces = [payload[i:i + 7001] for i in range(0, len(payload), 7001)]
        got = exchange(port, pieces, want=len(payload))
        if got != payload:
            failures.append(f"{name} echo: {len(got)} bytes back, "
                            f"{'equal' if payload.startswith(got) else 'different'} "
                            f"to the first of {len(payload)} sent")
        else:
            print(f"ok: {name} echo")
    finally:
        stop(name + " echo", proc)


def check_http(name, command, reference):
    proc, port = start(command)
    try:
        answers = http_answers(port)
        bad = [case for case in reference if answers[case] != reference[case]]
        for case in bad:
            failures.append(f"{name} http, {case}: {answers[case]!r}, "
                            f"polyloop's: {reference[case]!r}")
        if not bad:
            print(f"ok: {name} http ({len(reference)} cases)")
    finally:
        stop(name + " http", proc)


def uvloop_installed():
    return subprocess.run([PYTHON, "-c", "import uvloop"], capture_output=True).returncode == 0


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    http_hello, libuv, asio, asyncio_peer = sys.argv[1:]
    reference_proc, port = start([http_hello, "--backend=epoll"])
    try:
        reference = http_answers(port)
    finally:
        stop("examples/http_hello", reference_proc)
    if not reference["GET /"].endswith(b"Hello, World!"):
        failures.append(f"the reference answer is wrong: {reference['GET /']!r}")

    peers = {
        "libuv": [libuv],
        "asio": [asio],
        "asyncio": [PYTHON, asyncio_peer, "--loop=asyncio"],
        "uvloop": [PYTHON, asyncio_peer, "--loop=uvloop"],
    }
    for name, command in peers.items():
        if name == "uvloop" and not uvloop_installed():
            print("SKIP: uvloop: python3-uvloop is not installed (tools/install_deps.sh --peers)")
            continue
        check_echo(name, command + ["--serve=echo"])
        check_http(name, command + ["--serve=http"], reference)

    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
