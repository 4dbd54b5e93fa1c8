#!/usr/bin/env bash
# The seccomp part of the fault matrix (issue 16). Usage:
#   seccomp_test.sh SECCOMP_EXEC RING_REFUSED TEST_BINARY...
# 1. io_uring_setup refused with EPERM, then with ENOSYS: each TEST_BINARY (a
#    behaviour test) passes with --backend=auto, which must fall back to epoll
#    and say once why it skipped io_uring.
# 2. io_uring_enter refused after a successful set-up: a loop on io_uring ends
#    with a clear error naming the call, within seconds (no spin, no hang).
set -uo pipefail

seccomp_exec="$1"
ring_refused="$2"
shift 2
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
out="${TEST_TMPDIR:-$(mktemp -d)}/out.txt"

for err in EPERM ENOSYS; do
  for t in "$@"; do
    echo "=== io_uring_setup=${err}: $(basename "$t") --backend=auto"
    if ! timeout 300 "$seccomp_exec" "io_uring_setup=${err}" -- "$t" -- --backend=auto >"$out" 2>&1; then
      tail -n 40 "$out"
      fail "$(basename "$t") under io_uring_setup=${err}"
      continue
    fi
    if ! grep -q "polyloop: not using io_uring (io_uring unavailable: .*(${err})[^)]*); using epoll" "$out"; then
      grep -n "polyloop:" "$out" | head -n 5
      fail "$(basename "$t") under io_uring_setup=${err}: auto did not say it skipped io_uring for ${err}"
    fi
  done
done

for call in io_uring_enter; do
  echo "=== ${call}=EPERM after set-up: ring_refused --backend=io_uring"
  start=$SECONDS
  timeout 20 "$seccomp_exec" "${call}=EPERM" -- "$ring_refused" --backend=io_uring >"$out" 2>&1
  rc=$?
  cat "$out"
  if [[ $rc -eq 124 ]]; then
    fail "${call} refused: the loop hung (killed after 20 s)"
  elif [[ $rc -ne 3 ]]; then
    fail "${call} refused: exit ${rc}, expected 3 (a polyloop error caught by the program)"
  elif ! grep -q "^error: io_uring backend: waiting for events (the wait's system call was refused.*--backend=NAME.*Operation not permitted" "$out"; then
    fail "${call} refused: the error does not say the wait was refused, what to do, and EPERM"
  fi
  echo "(took $((SECONDS - start)) s)"
done

if [[ $failures -ne 0 ]]; then
  echo "${failures} failure(s)"
  exit 1
fi
echo "all seccomp cases passed"
