#!/usr/bin/env bash
# The handshake figures of docs/benchmarks.md ("TLS"); keep-alive https is
# loopbench's `https` workload now (with nginx as a peer). This script runs
# examples/http_hello with --tls-cert/--tls-key on each
# backend, and nginx serving the same 13-byte reply over TLS with the same
# ECDSA P-256 certificate, each pinned to CPU 0 with wrk on CPU 1 (64
# keep-alive connections, 5 s); then full handshakes, one connection after
# another, with `openssl s_time -new -www /` (an HTTP/1.0 GET / on each:
# wrk's "Connection: close" runs are not comparable, as http_hello does not
# echo the header and wrk counts the close that follows as an error). Prints
# requests (or connections) per second and the server's CPU per request
# (utime + stime from /proc/PID/stat).
#
#   bazel build -c opt //examples:http_hello && bench/https_compare.sh bazel-bin/examples/http_hello
#
# Needs openssl, wrk, curl, nginx and taskset.
set -euo pipefail
server_bin=$(realpath "$1")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout key.pem -out cert.pem 2>/dev/null
mkdir nginx
cat >nginx/nginx.conf <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log $dir/nginx/error.log;
pid $dir/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/body;
  proxy_temp_path $dir/nginx/proxy;
  fastcgi_temp_path $dir/nginx/fastcgi;
  uwsgi_temp_path $dir/nginx/uwsgi;
  scgi_temp_path $dir/nginx/scgi;
  server {
    listen 127.0.0.1:21400 ssl;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF

# name, close (yes/no), url, server command...
measure() {
  local name=$1 close=$2 url=$3
  shift 3
  taskset -c 0 "$@" >server.out 2>server.err &
  local pid=$!
  for _ in $(seq 100); do curl -sk "$url" -o /dev/null && break; sleep 0.05; done
  local before after out
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local requests rps
  if [[ $close == yes ]]; then
    local hostport=${url#https://}
    hostport=${hostport%/}
    out=$(taskset -c 1 openssl s_time -connect "$hostport" -new -www / -time 5 2>&1)
    # "1234 connections in 5.01 real seconds, ..."
    requests=$(awk '/connections in .* real seconds/ {print $1}' <<<"$out")
    rps=$(awk '/connections in .* real seconds/ {print $1 / $4}' <<<"$out")
  else
    out=$(taskset -c 1 wrk -t1 -c64 -d5s "$url")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  fi
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v n="$name" -v rps="$rps" -v req="$requests" -v t0="$before" -v t1="$after" \
    -v tck="$(getconf CLK_TCK)" \
    'BEGIN { printf "%-28s %10.0f req/s %8.1f us CPU/req\n", n, rps, (t1 - t0) / tck * 1e6 / req }'
}

port=21401
for backend in epoll io_uring asio; do
  measure "polyloop $backend https" no "https://127.0.0.1:$port/" \
    "$server_bin" --backend="$backend" --port="$port" --tls-cert=cert.pem --tls-key=key.pem
  port=$((port + 1))
done
measure "nginx https" no https://127.0.0.1:21400/ nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx"
measure "polyloop epoll handshakes" yes "https://127.0.0.1:$port/" \
  "$server_bin" --backend=epoll --port="$port" --tls-cert=cert.pem --tls-key=key.pem
measure "nginx handshakes" yes https://127.0.0.1:21400/ nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx"
