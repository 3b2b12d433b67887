#!/usr/bin/env bash
# callgrind-run.sh LABEL BINARY: one ringcast server under callgrind, driven
# by ringcast-load (by default its chat scenario at 2000 events/s for 5 s,
# after 1 s of warm-up), then stopped with SIGTERM; prints its instructions
# per event received, or with COUNT=published per publish the server counted
# (`/stats`; set-up included, a few thousandths).
# Knobs: LOAD (the generator, default target/release/ringcast-load), OUT
# (where LABEL.out, .json and .log go; default the current folder), PORT,
# SCENARIO_ARGS (the generator's scenario flags), COUNT (received|published).
# The ingress row: SCENARIO_ARGS="--scenario ingress --duration 3s --warmup 1s" COUNT=published
set -euo pipefail
label=$1 binary=$2
LOAD=${LOAD:-target/release/ringcast-load} OUT=${OUT:-.} PORT=${PORT:-18190}
SCENARIO_ARGS=${SCENARIO_ARGS:---scenario chat --rate 2000 --duration 5s --warmup 1s}
COUNT=${COUNT:-received}
PORT=$PORT HOST=127.0.0.1 RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/$label.out" "$binary" >"$OUT/$label.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
# shellcheck disable=SC2086
"$LOAD" run --target ringcast --url "ws://127.0.0.1:$PORT/ws" $SCENARIO_ARGS \
    --json "$OUT/$label.json" >/dev/null
curl -s "http://127.0.0.1:$PORT/stats" >"$OUT/$label.stats.json"
kill -TERM "$pid"
wait "$pid"
python3 - "$OUT" "$label" "$COUNT" <<'PY'
import json, re, sys
out, label, count = sys.argv[1:]
if count == "published":
    events = int(re.search(r'"published":(\d+)', open(f"{out}/{label}.stats.json").read()).group(1))
else:
    events = json.load(open(f"{out}/{label}.json"))["steps"][0]["received"]
total = int(re.search(r"^(?:summary|totals): (\d+)", open(f"{out}/{label}.out").read(), re.M).group(1))
print(f"{label}: {events:,} {count}, {total:,} instructions, {total / events:,.0f} per {'publish' if count == 'published' else 'event'}")
PY
