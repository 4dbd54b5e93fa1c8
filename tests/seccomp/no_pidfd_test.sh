#!/usr/bin/env bash
# net/subprocess's fallback where pidfd_open is missing (issue 12): each
# subprocess_test binary given passes under a seccomp filter that fails
# pidfd_open with ENOSYS (a kernel before 5.3, or a container's profile), so
# every child's exit is found by the WNOHANG waitpid timer instead. Usage:
#   no_pidfd_test.sh SECCOMP_EXEC SUBPROCESS_TEST_BINARY...
# The backend is the binary's own (its name ends in _BACKEND).
set -uo pipefail

seccomp_exec="$1"
shift
failures=0
out="${TEST_TMPDIR:-$(mktemp -d)}/out.txt"
for t in "$@"; do
  backend="${t##*subprocess_test_}"
  echo "=== pidfd_open=ENOSYS: $(basename "$t") --backend=${backend}"
  if ! timeout 300 "$seccomp_exec" "pidfd_open=ENOSYS" -- "$t" -- "--backend=${backend}" >"$out" 2>&1; then
    tail -n 40 "$out"
    echo "FAIL: $(basename "$t") without pidfd_open"
    failures=$((failures + 1))
  fi
done
if [[ $failures -ne 0 ]]; then
  echo "${failures} failure(s)"
  exit 1
fi
echo "all subprocess tests passed without pidfd_open"
