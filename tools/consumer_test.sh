#!/usr/bin/env bash
# Builds and runs examples/consumer — a separate Bazel workspace depending on
# this checkout through polyloop_dependencies() — with the default flags and
# with polyloop's build flags set from the consumer, and checks that a typo in
# a flag value fails with the valid values listed, and a default backend that
# is compiled out fails naming both flags. Run by .ci/run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/examples/consumer"
# Its own output base, so this does not disturb the main workspace's server.
bazel=(bazel --output_base="${TMPDIR:-/tmp}/polyloop-consumer-$(id -u)")
trap '"${bazel[@]}" shutdown >/dev/null 2>&1 || true' EXIT
failures=0
check() {  # check NAME EXPECTED_SUBSTRING OUTPUT
  if grep -qF -- "$2" <<<"$3"; then
    echo "PASS consumer: $1"
  else
    echo "FAIL consumer: $1: expected '$2' in:"
    sed 's/^/    /' <<<"$3"
    failures=$((failures + 1))
  fi
}

out=$("${bazel[@]}" run //:hello 2>/dev/null)
check "default build runs" "sum of squares: 14" "$out"
check "default backend is auto (io_uring here, or epoll with a notice)" "backend: " "$out"

out=$("${bazel[@]}" run --@polyloop//policies:default_backend=epoll //:hello 2>/dev/null)
check "--@polyloop//policies:default_backend=epoll" "backend: epoll" "$out"

out=$("${bazel[@]}" run --@polyloop//policies:io_uring=false //:hello 2>/dev/null)
check "--@polyloop//policies:io_uring=false runs on epoll" "backend: epoll" "$out"
linked=$(ldd "$("${bazel[@]}" info --@polyloop//policies:io_uring=false bazel-bin 2>/dev/null)/hello" | grep -c liburing || true)
check "--@polyloop//policies:io_uring=false links no liburing" "0" "$linked"

out=$("${bazel[@]}" run --@polyloop//policies:io_uring=false //:hello -- --backend=io_uring 2>&1 || true)
check "io_uring compiled out: asking for it is a clear error" "not compiled into this build" "$out"

out=$("${bazel[@]}" build --@polyloop//policies:default_backend=iouring //:hello 2>&1 || true)
check "a typo in a flag value fails the build" "valid values are: auto, epoll, io_uring, asio" "$out"

out=$("${bazel[@]}" build --@polyloop//policies:default_backend=io_uring --@polyloop//policies:io_uring=false //:hello 2>&1 || true)
check "a default backend compiled out fails the build naming both flags" \
  "default_backend=io_uring needs io_uring compiled in (--@polyloop//policies:io_uring=true)" "$out"

if ((failures)); then
  echo "consumer: ${failures} check(s) failed"
  exit 1
fi
echo "consumer: all checks passed"
