#!/usr/bin/env bash
# The fd leak check fails a binary that leaks, naming each descriptor and what
# it is, and passes the same binary when it closes what it opened.
set -uo pipefail
demo="$1"

out="$("$demo" 2>&1)"
rc=$?
if [[ $rc == 0 ]]; then
  echo "FAIL: the leaking binary passed:"; echo "$out"; exit 1
fi
if [[ $(grep -cE '^fd [0-9]+ \(pipe:\[[0-9]+\]\) left open$' <<<"$out") != 2 ]]; then
  echo "FAIL: expected both pipe ends named as left open:"; echo "$out"; exit 1
fi

out="$("$demo" -- --no-leak 2>&1)"
rc=$?
if [[ $rc != 0 ]]; then
  echo "FAIL: the binary that closes its pipe failed (exit $rc):"; echo "$out"; exit 1
fi
echo "PASS"
