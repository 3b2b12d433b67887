#!/usr/bin/env bash
# callgrind-run.sh LABEL BINARY: one ringcast server under callgrind, driven
# by ringcast-load's chat scenario at 2000 events/s for 5 s (after 1 s of
# warm-up), then stopped with SIGTERM; prints its instructions per event.
# Knobs: LOAD (the generator, default target/release/ringcast-load), OUT
# (where LABEL.out, .json and .log go; default the current folder), PORT.
set -euo pipefail
label=$1 binary=$2
LOAD=${LOAD:-target/release/ringcast-load} OUT=${OUT:-.} PORT=${PORT:-18190}
PORT=$PORT HOST=127.0.0.1 RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/$label.out" "$binary" >"$OUT/$label.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
"$LOAD" run --target ringcast --url "ws://127.0.0.1:$PORT/ws" --scenario chat --rate 2000 \
    --duration 5s --warmup 1s --json "$OUT/$label.json" >/dev/null
kill -TERM "$pid"
wait "$pid"
python3 - "$OUT" "$label" <<'PY'
import json, re, sys
out, label = sys.argv[1:]
step = json.load(open(f"{out}/{label}.json"))["steps"][0]
total = int(re.search(r"^(?:summary|totals): (\d+)", open(f"{out}/{label}.out").read(), re.M).group(1))
print(f"{label}: {step['received']} events, {total:,} instructions, {total / step['received']:,.0f} per event")
PY
