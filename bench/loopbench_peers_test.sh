#!/usr/bin/env bash
# loopbench --peers end to end, short: callbacks, echo, http, https and
# https_handshake once on asio
# and on every peer that has them, each peer's run passing loopbench's checks
# (the echo client checks every byte echoed; http checks GET /'s answer and
# wrk's errors), or the peer skipped with a message saying what to install;
# the peers' columns in the table; a bad peer name refused.
set -euo pipefail
loopbench="$1"
out="${TEST_TMPDIR}/out.txt"
err="${TEST_TMPDIR}/err.txt"
fail() { echo "FAIL: $*"; cat "$out" "$err"; exit 1; }

"$loopbench" --peers --backend=asio --workload=callbacks,echo,http,https,https_handshake --repeat=1 --seconds=1 \
  --chart="${TEST_TMPDIR}/chart.svg" >"$out" 2>"$err" || fail "loopbench --peers failed"

if grep '^{"workload"' "$out" | grep -v '"ok":true'; then fail "a run's check failed"; fi
ran=0
for peer in libuv boost_asio uvloop asyncio nginx; do
  if grep -q "skipping peer $peer: .*install" "$err"; then
    echo "SKIP: $peer ($(grep "skipping peer $peer" "$err"))"
    continue
  fi
  case "$peer" in
    nginx) workloads="http https https_handshake" ;;
    *) workloads="callbacks echo http" ;;
  esac
  for w in $workloads; do
    grep -q "^{\"workload\":\"$w\",\"backend\":\"$peer\".*\"ok\":true" "$out" ||
      fail "no passing $w run of $peer"
  done
  grep -q "^| workload (median) |.* $peer |" "$out" || fail "no table column for $peer"
  ran=$((ran + 1))
done
# The asio backend and the Boost.Asio peer are two columns.
grep -qE '^\| workload \(median\) \| asio \|.* boost_asio \|' "$out" ||
  fail "the asio backend and the boost_asio peer do not have a column each"
# libuv and boost_asio are built with loopbench: never skipped.
(( ran >= 2 )) || fail "only $ran peers ran"

if "$loopbench" --peers=libuv,nosuch --workload=callbacks >"$out" 2>"$err"; then
  fail "an unknown peer was accepted"
fi
grep -q "unknown peer 'nosuch'" "$err" || fail "no message for an unknown peer"
echo "PASS: $ran peers"
