#!/usr/bin/env bash
# loopbench end to end, short: every workload once on every backend that can
# run here (echo and http for 1 s), every check passing, the table complete
# and the chart written. Figures are not judged here: they are docs/benchmarks.md's.
set -euo pipefail
loopbench="$1"
out="${TEST_TMPDIR}/out.txt"
chart="${TEST_TMPDIR}/chart.svg"
"$loopbench" --backend=all --repeat=1 --seconds=1 --chart="$chart" >"$out"

fail() { echo "FAIL: $*"; cat "$out"; exit 1; }
# One JSON line per run: 9 core workloads (+2 static-dispatch variants) and 7
# network ones per backend; all ok.
backends=$(grep -c '"workload":"callbacks".*"dispatch":"dynamic"' "$out")
(( backends >= 1 )) || fail "no callbacks run"
runs=$(grep -c '^{"workload"' "$out")
(( runs == backends * 18 )) || fail "$runs runs for $backends backends, expected $((backends * 18))"
if grep '^{"workload"' "$out" | grep -v '"ok":true'; then fail "a run's check failed"; fi
grep -q '"workload":"echo".*"size":16384' "$out" || fail "no 16 KiB echo run"
grep -q '"server_cpu_us_per_req"' "$out" || fail "http did not report the server's CPU"
grep -q '"workload":"https".*"server_cpu_us_per_req"' "$out" || fail "no https run"
grep -q '"workload":"https_handshake".*"server_cpu_us_per_handshake"' "$out" ||
  fail "no https_handshake run"
grep -q '"workload":"idle_conns".*"idle":10000.*"server_bytes_per_idle_conn"' "$out" ||
  fail "no idle_conns run with 10,000 idle connections"
# Every in-process run carries the counters it caused (bench/loop_counters.h).
if grep '^{"workload":"\(callbacks\|tasks\|sleep_chain\|pingpong\)"' "$out" | grep -v '"syscalls_per_op"'; then
  fail "a run without its counters"
fi
grep -q '"workload":"pingpong".*"iterations_per_op"' "$out" || fail "pingpong has no iterations_per_op"
# The example servers' runs carry their loops' counters (--stats), per message.
if grep '^{"workload":"\(echo\|http\)"' "$out" | grep -v '"syscalls_per_op".*"iterations_per_op"\|"iterations_per_op".*"syscalls_per_op"'; then
  fail "an echo or http run without the server's counters"
fi
# many_loops: both loads at 1 and at 2 loops, each with its figures.
for key in echo_1loop_msgs_per_s echo_2loops_msgs_per_s echo_1loop_server_cpu_us_per_msg \
  echo_2loops_server_cpu_us_per_msg http_1loop_requests_per_s http_2loops_requests_per_s \
  http_1loop_server_cpu_us_per_req http_2loops_server_cpu_us_per_req; do
  (( $(grep -c "\"workload\":\"many_loops\".*\"$key\":[1-9]" "$out") == backends )) ||
    fail "a many_loops run without $key"
done
# The table: a row per figure, a number in every cell.
for row in "callbacks, ns per callback" "callbacks, static dispatch" "tasks, bytes per task" \
  "timers, overhead" "sleep_chain, ns per yield" "sleep_chain, static dispatch" \
  "queue, ns per item" "queue, allocations per item" "lock, ns per acquire" "lock, allocations" \
  "echo 64 B, server CPU" "echo 16 KiB, server CPU" "http, server CPU" "https, server CPU" \
  "https handshake, server CPU" "idle_conns, server bytes per idle" \
  "to_thread, ns per round trip" "file_read 64 KiB, GiB/s" "file_read, cat's GiB/s" \
  "pingpong, ns per round trip" "pingpong, syscalls per round trip" \
  "pingpong, loop iterations per round trip" "echo 64 B, server syscalls per msg" \
  "http, server syscalls per request" "many_loops echo, 2 loops, msgs/s" \
  "many_loops http, 2 loops, server CPU us per request"; do
  line=$(grep "^| $row" "$out") || fail "no table row '$row'"
  if echo "$line" | grep -qE '\| (-|FAILED[^|]*) \|'; then fail "empty or failed cell: $line"; fi
done
grep -q '<svg' "$chart" || fail "no chart at $chart"
(( $(grep -c '<rect' "$chart") >= backends * 11 )) || fail "the chart lacks bars"
echo "PASS: $runs runs on $backends backends"
