#!/usr/bin/env bash
# Runs an example binary ($1, further args passed on) and fails if it fails.
set -euo pipefail
"$@"
