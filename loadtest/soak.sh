#!/usr/bin/env bash
# Soak: a release ringcast on loopback under connection churn, stalled
# readers, topic churn and steady publishing for DURATION, then a check that
# its connection and subscription counts return to zero. Not part of CI.
# See loadtest/README.md ("Soak").
#
#   loadtest/soak.sh                                # 10 minutes
#   DURATION=2m loadtest/soak.sh                    # shorter
#   loadtest/soak.sh --subscribers 2000 --rate 5000 # arguments go to `ringcast-load soak`
#   SUBSCRIBER_QUEUE_SIZE=256 loadtest/soak.sh      # server settings pass through the environment
#
# Knobs (environment): DURATION (default 10m), PORT (default 18090), OUT
# (default loadtest/results/soak-<timestamp>), BUILD (0 uses the binaries
# already in target/release), RUST_LOG (default warn). Every other variable
# reaches the server unchanged.
#
# Writes $OUT/soak.json, $OUT/soak.txt (progress and summary) and
# $OUT/ringcast.log; exits with the soak's status.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
PORT=${PORT:-18090}
OUT=${OUT:-loadtest/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}

mkdir -p "$OUT"
if [[ ${BUILD:-1} == 1 ]]; then
    echo "== building (release)"
    cargo build --release -q -p ringcast -p ringcast-load
fi

# A thousand churning connections on each side need the descriptors.
ulimit -n "$(ulimit -Hn)"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_open "$PORT"; then
    echo "port $PORT is already in use: set PORT or stop whatever listens there" >&2
    exit 1
fi

echo "== starting ringcast on 127.0.0.1:$PORT"
RUST_LOG=${RUST_LOG:-warn} HOST=127.0.0.1 PORT=$PORT \
    target/release/ringcast >"$OUT/ringcast.log" 2>&1 &
server_pid=$!
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT
for _ in $(seq 50); do
    if ! kill -0 "$server_pid" 2>/dev/null || port_open "$PORT"; then
        break
    fi
    sleep 0.1
done
if ! port_open "$PORT"; then
    echo "ringcast did not start; its log:" >&2
    cat "$OUT/ringcast.log" >&2
    exit 1
fi

echo "== soaking for $DURATION; results in $OUT"
status=0
target/release/ringcast-load soak --url "ws://127.0.0.1:$PORT/ws" --server-pid "$server_pid" \
    --duration "$DURATION" --json "$OUT/soak.json" "$@" 2>&1 | tee "$OUT/soak.txt" || status=$?

stop_server
trap - EXIT
echo "== server log: $OUT/ringcast.log ($(grep -c . "$OUT/ringcast.log" || true) lines)"
exit "$status"
