#!/bin/bash
# The seed tour on the sim backend (virtual time): every tutorial delay at
# its full length (--scale=1), yet the whole tour in under 0.5 s of wall
# time; every elapsed figure exact; and the same lines as the tour on epoll
# (at --scale=0.01), but for the backend's name and the elapsed figures.
#
#   seed_tour_sim_test.sh PATH_TO_SEED_TOUR
set -euo pipefail

tour="$1"
dir="${TEST_TMPDIR:-$(mktemp -d)}"
fail() {
  echo "FAIL: $*"
  exit 1
}

start=$(date +%s%N)
"$tour" --backend=sim >"$dir/sim.out" 2>&1 || fail "the tour failed on sim: $(cat "$dir/sim.out")"
wall_ms=$((($(date +%s%N) - start) / 1000000))
((wall_ms < 500)) || fail "the tour took ${wall_ms} ms of wall time on sim (virtual time: it should take a few)"

grep -q "a new event loop on the sim backend" "$dir/sim.out" || fail "not on sim: $(head -20 "$dir/sim.out")"
# The tutorial's own figures, to the hundredth: 3 s for each one-coroutine
# example and each gather; 1 s where run_forever stops at the first
# coroutine's end (section 6's pitfall) and where wait() returns at the first.
got="$(awk '/^elapsed /{print $2}' "$dir/sim.out" | tr '\n' ' ')"
want="3.00 3.00 3.00 3.00 3.00 3.00 1.00 3.00 3.00 1.00 3.00 "
[[ "$got" == "$want" ]] || fail "elapsed figures on sim: '$got', expected '$want'"

"$tour" --backend=epoll --scale=0.01 >"$dir/epoll.out" 2>&1 || fail "the tour failed on epoll"
normalise() {
  sed -E 's/^elapsed [0-9.]+ s.*/elapsed/; s/ \(every delay scaled by 0\.01\)//; s/on the (sim|epoll) backend/on the BACKEND backend/' "$1"
}
diff <(normalise "$dir/sim.out") <(normalise "$dir/epoll.out") ||
  fail "the tour's lines differ between sim and epoll (above)"
echo "PASS: the tour on sim in ${wall_ms} ms, the same lines as on epoll"
