#!/usr/bin/env bash
# backend_pingpong: --help, a clear refusal of bad arguments (exit 2, with
# what was wrong), and a tiny run that reports every backend it can run.
set -euo pipefail
bin="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" --help | grep -q -- "--pairs=N" || fail "--help does not list --pairs"

for bad in --pairs=0 --pairs=x --rounds= --repeat=-3 --bogus --pairs; do
  rc=0
  err="$("$bin" "$bad" 2>&1 >/dev/null)" || rc=$?
  [[ $rc == 2 ]] || fail "$bad: exit $rc, expected 2"
  [[ "$err" == *backend_pingpong:* ]] || fail "$bad: no message on stderr: '$err'"
done

out="$("$bin" --pairs=2 --rounds=50 --repeat=1 2>/dev/null)"
echo "$out"
grep -q "^pairs=2 rounds=50 repeat=1" <<<"$out" || fail "the header does not echo the options"
grep -Eq "^  [a-z_]+.* [0-9]+  \[[0-9]+\.\.[0-9]+\]" <<<"$out" || fail "no backend figure"
echo "backend_pingpong_test: ok"
