#!/usr/bin/env bash
# Starts an example server ($1: echo_server or http_hello; $2 which one it
# is: "echo" or "http"; further arguments are passed on) on port 0, talks to
# it over bash's /dev/tcp, then stops it with SIGTERM (echo) or SIGINT (http),
# which must end it with status 0 (core/signals delivers both to the loop) and
# leave its counters in the --stats file (of as many loops as --loops says).
set -euo pipefail
bin=$1
kind=$2
shift 2

tmp=${TEST_TMPDIR:-$(mktemp -d)}
out=$tmp/$kind.out
err=$tmp/$kind.err
stats=$tmp/$kind.stats
"$bin" --port=0 --stats="$stats" "$@" >"$out" 2>"$err" &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "--- server stdout:" >&2
  cat "$out" >&2
  echo "--- server stderr:" >&2
  cat "$err" >&2
  exit 1
}

for _ in $(seq 200); do
  grep -q '^listening on ' "$out" && break
  kill -0 "$pid" 2>/dev/null || fail "the server exited before listening"
  sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$out")
[[ -n $addr ]] || fail "no 'listening on' line"
host=${addr%:*}
port=${addr##*:}
[[ $host == 127.0.0.1 && $port =~ ^[0-9]+$ && $port != 0 ]] || fail "bad address: $addr"

# Reads exactly $1 bytes from fd 3 (5 s at most).
read_bytes() {
  local got
  got=$(timeout 5 head -c "$1" <&3 | od -An -c | tr -s ' \n' ' ')
  printf '%s' "$got"
}
as_od() { printf "$1" | od -An -c | tr -s ' \n' ' '; }

case $kind in
  echo)
    exec 3<>"/dev/tcp/$host/$port"
    printf 'hello, echo\n' >&3
    [[ $(read_bytes 12) == "$(as_od 'hello, echo\n')" ]] || fail "echo of one line"
    printf 'one\ntwo\n' >&3
    [[ $(read_bytes 8) == "$(as_od 'one\ntwo\n')" ]] || fail "echo of two lines in one write"
    exec 3>&-
    ;;
  http)
    ok='HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!'
    ok_len=$(printf "$ok" | wc -c)
    exec 3<>"/dev/tcp/$host/$port"
    # Two pipelined requests in one write, then a third on the same connection.
    printf 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n' >&3
    [[ $(read_bytes $((2 * ok_len))) == "$(as_od "$ok$ok")" ]] || fail "two pipelined GET /"
    printf 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' >&3
    [[ $(read_bytes "$ok_len") == "$(as_od "$ok")" ]] || fail "a third GET / (keep-alive)"
    exec 3>&-
    # A malformed request: 400, then the server closes the connection.
    exec 3<>"/dev/tcp/$host/$port"
    printf 'NONSENSE\r\n\r\n' >&3
    reply=$(timeout 5 cat <&3) || fail "the connection was not closed after a 400"
    [[ $reply == 'HTTP/1.1 400 Bad Request'* ]] || fail "malformed request: got '$reply'"
    exec 3>&-
    ;;
  *)
    fail "unknown kind $kind"
    ;;
esac

stop_signal=TERM
[[ $kind == http ]] && stop_signal=INT
kill -"$stop_signal" "$pid"
rc=0
wait "$pid" || rc=$?
trap - EXIT
[[ $rc == 0 ]] || fail "exit status $rc after SIG$stop_signal"
# --stats=PATH: the loops' counters (summed), written at exit as one JSON line.
loops=1
for arg in "$@"; do [[ $arg == --loops=* ]] && loops=${arg#--loops=}; done
grep -Eq "^\{\"ok\":true,\"loops\":$loops,\"iterations\":[1-9][0-9]*,.*\"syscalls\":[1-9][0-9]*" "$stats" ||
  fail "--stats: not the counters of $loops loop(s) in $stats: '$(cat "$stats" 2>/dev/null)'"
echo "PASS: $kind on $addr $*"
