#!/usr/bin/env bash
# Starts an example server ($1: echo_server or http_hello; $2: "echo" or
# "http"; further arguments are passed on) with --tls-cert/--tls-key on port
# 0, with a certificate made here by the openssl command line, and talks to
# it with peers polyloop did not write: `openssl s_client` (echo) and
# `curl --cacert` (http), both verifying the certificate and the host name.
# Then SIGTERM must end it with status 0. Skipped (status 0, said so) when
# openssl or curl is missing (tools/install_deps.sh installs openssl).
set -euo pipefail
bin=$1
kind=$2
shift 2

command -v openssl >/dev/null || { echo "SKIPPED: no openssl on PATH"; exit 0; }
if [[ $kind == http ]] && ! command -v curl >/dev/null; then echo "SKIPPED: no curl"; exit 0; fi

tmp=${TEST_TMPDIR:-$(mktemp -d)}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/req.err"

out=$tmp/$kind.out
err=$tmp/$kind.err
"$bin" --port=0 --tls-cert="$tmp/cert.pem" --tls-key="$tmp/key.pem" "$@" >"$out" 2>"$err" &
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
port=${addr##*:}
[[ $port =~ ^[0-9]+$ && $port != 0 ]] || fail "bad address: $addr"

case $kind in
  echo)
    # stdin stays open 1 s (the echo comes back meanwhile), then s_client
    # sends close_notify and exits.
    got=$( (printf 'hello, tls\n'; sleep 1) |
      timeout 10 openssl s_client -quiet -no_ign_eof -connect "127.0.0.1:$port" \
        -CAfile "$tmp/cert.pem" -verify_return_error -verify_hostname localhost 2>"$tmp/client.err") ||
      { cat "$tmp/client.err" >&2; fail "openssl s_client failed"; }
    [[ $got == 'hello, tls' ]] || { cat "$tmp/client.err" >&2; fail "echo over TLS: got '$got'"; }
    ;;
  http)
    got=$(timeout 10 curl -sS --cacert "$tmp/cert.pem" --resolve "localhost:$port:127.0.0.1" \
      "https://localhost:$port/" "https://localhost:$port/") || fail "curl failed"
    [[ $got == 'Hello, World!Hello, World!' ]] || fail "two GET / over one TLS connection: got '$got'"
    # A client that does not trust the certificate is refused, and says why.
    if timeout 10 curl -sS --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/" \
      2>"$tmp/curl.err"; then
      fail "curl without --cacert was served"
    fi
    grep -qi 'certificate' "$tmp/curl.err" || fail "curl's refusal: $(cat "$tmp/curl.err")"
    ;;
  *)
    fail "unknown kind $kind"
    ;;
esac

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
trap - EXIT
[[ $rc == 0 ]] || fail "exit status $rc after SIGTERM"
echo "PASS: $kind over TLS on $addr $*"
