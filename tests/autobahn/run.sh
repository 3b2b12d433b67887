#!/usr/bin/env bash
# Runs Autobahn TestSuite cases against examples/autobahn_echo (built with
# `cargo build --release --example autobahn_echo`) and checks the report.
#
#   tests/autobahn/run.sh VENV REPORT_DIR CASE...
#
# VENV is a virtual environment with tests/autobahn/requirements.txt;
# CASE is a case id or glob (`1.*`). Exits non-zero when any case fails,
# is unimplemented or cannot run (tests/autobahn/check.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$1 report=$2
shift 2
echo_bin=${CARGO_TARGET_DIR:-target}/release/examples/autobahn_echo
port=${AUTOBAHN_PORT:-9001}
PORT=$port "$echo_bin" &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true; wait "$echo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
# Not some other server already on the port.
kill -0 "$echo_pid" 2>/dev/null || { echo "autobahn_echo did not start" >&2; exit 1; }
includes=()
for case in "$@"; do includes+=(-i "$case"); done
rm -rf "$report"
status=0
# kosoku exits 1 when any case did not pass; the check below says which.
timeout 900 "$venv/bin/kosoku" "ws://127.0.0.1:$port/" "${includes[@]}" -p 2 -o "$report" >/dev/null || status=$?
"$venv/bin/python" tests/autobahn/check.py "$report" || status=1
exit "$status"
