#!/usr/bin/env bash
# ringcast vs nats-server, side by side in one run, same load generator.
#
# Each server runs pinned to one core (SERVER_CPU) and the load generator
# to another (CLIENT_CPU); the standard scenarios run against ringcast, then
# against nats-server (WebSocket on loopback), and the ratios are printed.
# Results (JSON and text per run, a chart per step scenario, the summary) go
# to $OUT.
#
#   loadtest/compare.sh                 # full run, ~23 minutes
#   QUICK=1 loadtest/compare.sh         # smoke run, ~6 minutes
#
# Knobs (environment): OUT, SERVER_CPU, CLIENT_CPU, STEP_DURATION, WARMUP,
# QUICK, BUILD (0 uses the binaries already built), SCENARIOS (space-separated
# subset of: fanout-1m fanout topics ingress ingress-frame ingress-js idle chat-10k
# chat-50k chat-overload chat-step burst ingress-1 compress-128-off
# compress-128-on compress-1k-off compress-1k-on compress-4k-off
# compress-4k-on fanout-ws-1k fanout-sse-1k; the last two run on ringcast
# only: its WebSocket against its server-sent events), TARGETS (space-separated subset of: ringcast nats; both
# unless set, e.g. TARGETS=ringcast to compare two ringcast builds through
# RINGCAST), COMPRESS_RATE_128, COMPRESS_RATE_1K, COMPRESS_RATE_4K
# (events/s of the compression rows), FANOUT_SWEEP (the fanout sweep's
# events/s, comma-separated), SSE_RATE (events/s of the
# fanout-ws-1k and fanout-sse-1k rows, default 100), RINGCAST_PORT, NATS_PORT, NATS_WS_PORT
# (loopback ports, 18080, 4222, 4223), RINGCAST (the server binary,
# default $CARGO_TARGET_DIR/release/ringcast, target/ when unset), LOAD (the
# generator, likewise). Other variables reach ringcast (SUBSCRIBER_QUEUE_SIZE,
# COALESCE_WINDOW, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    STEP_DURATION=${STEP_DURATION:-2s}
    WARMUP=${WARMUP:-1s}
    DURATION=3s
else
    STEP_DURATION=${STEP_DURATION:-5s}
    WARMUP=${WARMUP:-2s}
    DURATION=10s
fi
SCENARIOS=${SCENARIOS:-fanout-1m fanout topics ingress ingress-frame ingress-js idle chat-10k chat-50k chat-overload chat-step burst ingress-1 compress-128-off compress-128-on compress-1k-off compress-1k-on compress-4k-off compress-4k-on fanout-ws-1k fanout-sse-1k}
# The compression rows' payload sizes and publish rates (events/s, x 1000
# subscribers), by the name's size.
declare -A COMPRESS_PAYLOAD=([128]=128 [1k]=1024 [4k]=4096)
declare -A COMPRESS_RATE=([128]=${COMPRESS_RATE_128:-50} [1k]=${COMPRESS_RATE_1K:-10} [4k]=${COMPRESS_RATE_4K:-2})
# The fanout sweep's events/s (x 1000 subscribers), in steps of about 1.25x
# that land on 0.5M, 1M and 2M deliveries/s.
FANOUT_SWEEP=${FANOUT_SWEEP:-200,250,315,400,500,630,800,1000,1250,1600,2000,2500,3150,4000,5000,6000}
RINGCAST_PORT=${RINGCAST_PORT:-18080}
NATS_PORT=${NATS_PORT:-4222}
NATS_WS_PORT=${NATS_WS_PORT:-4223}

mkdir -p "$OUT"

if ! command -v nats-server >/dev/null; then
    echo "== installing nats-server"
    apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
fi
if [[ ${BUILD:-1} == 1 ]]; then
    echo "== building (release)"
    cargo build --release -q -p ringcast -p ringcast-load
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RINGCAST=${RINGCAST:-$TARGET_DIR/release/ringcast}
LOAD=${LOAD:-$TARGET_DIR/release/ringcast-load}

# 10k connections per side need the descriptors.
ulimit -n "$(ulimit -Hn)"

# nats-server compresses a connection's frames only if that client
# negotiated permessage-deflate, and only with compression enabled: the
# compress-*-on rows run with nats-compression.conf.
for compression in false true; do
    conf=$OUT/nats.conf
    [[ $compression == true ]] && conf=$OUT/nats-compression.conf
    cat >"$conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
websocket { listen: "127.0.0.1:$NATS_WS_PORT", no_tls: true, compression: $compression }
max_payload: 1048576
EOF
done
# The ingress-js row publishes into a JetStream stream (memory storage; the
# store directory only holds JetStream's own state).
jetstream_store=$(mktemp -d)
cat "$OUT/nats.conf" - >"$OUT/nats-jetstream.conf" <<EOF
jetstream { store_dir: "$jetstream_store", max_memory_store: 4G }
EOF

server_pid=
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_server() { # target scenario
    local port conf=$OUT/nats.conf
    [[ $2 == compress-*-on ]] && conf=$OUT/nats-compression.conf
    [[ $2 == ingress-js ]] && conf=$OUT/nats-jetstream.conf
    port=$([[ $1 == ringcast ]] && echo $RINGCAST_PORT || echo $NATS_WS_PORT)
    if port_open "$port"; then
        echo "port $port is already in use: stop whatever listens there first" >&2
        exit 1
    fi
    case $1 in
    ringcast)
        RUST_LOG=warn PORT=$RINGCAST_PORT HOST=127.0.0.1 \
            taskset -c "$SERVER_CPU" "$RINGCAST" >"$OUT/ringcast.log" 2>&1 &
        ;;
    nats)
        taskset -c "$SERVER_CPU" nats-server -c "$conf" >"$OUT/nats.log" 2>&1 &
        ;;
    esac
    server_pid=$!
    for _ in $(seq 50); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        if port_open "$port"; then
            return
        fi
        sleep 0.1
    done
    echo "$1 did not start" >&2
    exit 1
}
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$jetstream_store"' EXIT

url_of() { # target
    [[ $1 == ringcast ]] && echo "ws://127.0.0.1:$RINGCAST_PORT/ws" || echo "ws://127.0.0.1:$NATS_WS_PORT"
}

args_of() { # scenario target
    case $1 in
    fanout-1m) echo "--scenario fanout --rate 1000 --duration $DURATION --warmup $WARMUP" ;;
    # Every step of the sweep, past where latency climbs (x 1000 subscribers:
    # 0.2M to 6M deliveries/s).
    fanout) echo "--scenario fanout --sweep $FANOUT_SWEEP --step-duration $STEP_DURATION --warmup $WARMUP" ;;
    topics) echo "--scenario topics --step --rate 2000 --step-factor 1.25 --step-duration $STEP_DURATION --warmup $WARMUP" ;;
    ingress) echo "--scenario ingress --duration $DURATION --warmup $WARMUP" ;;
    # NATS publishers send one PUB per WebSocket frame, as ringcast's publishers
    # always send one publish per frame: the like-for-like ingress.
    ingress-frame) echo "--scenario ingress --one-publish-per-frame --duration $DURATION --warmup $WARMUP" ;;
    # Every publish kept, deduplicated by its id and acknowledged, as every
    # ringcast publish is: nats-server's go into a JetStream stream with
    # ringcast's defaults (see ringcast-load's --jetstream).
    ingress-js) echo "--scenario ingress --duration $DURATION --warmup $WARMUP $([[ $2 == nats ]] && echo --jetstream)" ;;
    idle) echo "--scenario idle" ;;
    # 100 topics x 1 subscriber, 10 publishers, 128 B, one publish per frame.
    chat-10k) echo "--scenario chat --rate 10000 --duration $DURATION --warmup $WARMUP" ;;
    chat-50k) echo "--scenario chat --rate 50000 --duration $DURATION --warmup $WARMUP" ;;
    # About twice what a server core sustains.
    chat-overload) echo "--scenario chat --rate 80000 --duration $DURATION --warmup $WARMUP" ;;
    # Capacity: the last step without loss, cut or error and p99 <= 200 ms
    # (loose: on a shared machine p99 spikes of 50-100 ms come and go).
    chat-step) echo "--scenario chat --step --rate 20000 --step-factor 1.25 --max-rate 200000 --max-p99 200ms --step-duration $STEP_DURATION --warmup $WARMUP" ;;
    # 1 topic x 10 subscribers, 2048 x 1 KiB every 500 ms (2x the default queue).
    burst) echo "--scenario burst --duration $DURATION --warmup $WARMUP" ;;
    # One connection's pipelined publish rate.
    ingress-1) echo "--scenario ingress --publishers 1 --duration $DURATION --warmup $WARMUP" ;;
    # 1 topic x 1000 subscribers, permessage-deflate off or on, at a rate both
    # servers sustain with compression on: nats-server deflates for each
    # connection, some 6, 25 and 80 us per delivery of 128 B, 1 KiB and 4 KiB
    # on the 2-core test machine, so 50, 10 and 2 events/s keep it well under
    # a core even with a build running beside it.
    compress-*)
        local size=${1#compress-}
        size=${size%-*}
        echo "--scenario fanout --subscribers-per-topic 1000 --payload-bytes ${COMPRESS_PAYLOAD[$size]}" \
            "--rate ${COMPRESS_RATE[$size]} --duration $DURATION --warmup $WARMUP" \
            "$([[ $1 == *-on ]] && echo --compression)"
        ;;
    # 1 topic x 1000 subscribers at one rate, over WebSocket or over
    # server-sent events (ringcast only).
    fanout-ws-1k | fanout-sse-1k)
        echo "--scenario fanout --subscribers-per-topic 1000 --rate ${SSE_RATE:-100}" \
            "--duration $DURATION --warmup $WARMUP $([[ $1 == *-sse-* ]] && echo --sse)"
        ;;
    *)
        echo "unknown scenario $1" >&2
        exit 1
        ;;
    esac
}

TARGETS=${TARGETS:-ringcast nats}
for scenario in $SCENARIOS; do
    for target in $TARGETS; do
        if [[ $scenario == fanout-*-1k && $target != ringcast ]]; then
            continue
        fi
        echo "== $scenario: $target"
        start_server "$target" "$scenario"
        # shellcheck disable=SC2046
        taskset -c "$CLIENT_CPU" "$LOAD" run --target "$target" --url "$(url_of "$target")" \
            $(args_of "$scenario" "$target") --server-pid "$server_pid" \
            --json "$OUT/$scenario-$target.json" | tee "$OUT/$scenario-$target.txt"
        stop_server
    done
done

# One chart per step scenario (their rates are far apart): delivered/s, p50
# and p99 against the offered rate, both servers.
for scenario in fanout topics chat-step; do
    charted=()
    for target in ringcast nats; do
        [[ -f $OUT/$scenario-$target.json ]] && charted+=("$OUT/$scenario-$target.json")
    done
    if ((${#charted[@]})); then
        "$LOAD" chart --out "$OUT/$scenario.svg" "${charted[@]}"
    fi
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, os, sys

out = sys.argv[1]

def load(scenario, target):
    path = os.path.join(out, f"{scenario}-{target}.json")
    return json.load(open(path)) if os.path.exists(path) else None

def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)

def ratio(a, b, invert=False):
    if a is None or b is None or a == 0 or b == 0:
        return "n/a"
    return f"{(b / a if invert else a / b):.2f}x"

rows = []
def row(what, rc, nats, spec, better, invert=False):
    rows.append((what, fmt(rc, spec), fmt(nats, spec), ratio(rc, nats, invert), better))

def step(result):
    return result["steps"][0] if result and result["steps"] else None

for scenario in ["fanout-1m"]:
    rc, nats = step(load(scenario, "ringcast")), step(load(scenario, "nats"))
    if rc and nats:
        row("(a) 1M deliveries/s offered: delivered/s", rc["delivered_per_sec"], nats["delivered_per_sec"], ",.0f", "higher")
        row("(a) 1M offered: loss", rc["loss"], nats["loss"], ",", "zero")
        row("(a) 1M offered: p99 ms", rc["p99_ms"], nats["p99_ms"], ".1f", "lower", True)
        row("(a) 1M offered: server CPU ns/delivery", rc["server_cpu_ns_per_delivery"], nats["server_cpu_ns_per_delivery"], ".0f", "lower", True)
for scenario, label in [("fanout", "(a) wide fan-out"), ("topics", "(b) many topics")]:
    rc, nats = load(scenario, "ringcast"), load(scenario, "nats")
    if rc and nats:
        row(f"{label}: max sustained deliveries/s (no loss)", rc["max_sustained_deliveries_per_sec"], nats["max_sustained_deliveries_per_sec"], ",.0f", "higher")
        row(f"{label}: highest offered deliveries/s with p99 < 50 ms, loss <= 0.1%",
            rc.get("sustained_offered_deliveries_per_sec"), nats.get("sustained_offered_deliveries_per_sec"), ",.0f", "higher")
for scenario, label in [("ingress", "(c) ingress"), ("ingress-frame", "(c) ingress, one PUB per frame"),
                        ("ingress-js", "(c) ingress, every publish kept, deduplicated and acknowledged (nats: JetStream)")]:
    rc, nats = step(load(scenario, "ringcast")), step(load(scenario, "nats"))
    if rc and nats:
        row(f"{label}: publishes/s", rc["delivered_per_sec"], nats["delivered_per_sec"], ",.0f", "higher")
rc, nats = load("idle", "ringcast"), load("idle", "nats")
if rc and nats and rc["idle"] and nats["idle"]:
    row("(d) idle: RSS KiB per subscribed connection", rc["idle"]["rss_kib_per_connection"], nats["idle"]["rss_kib_per_connection"], ".2f", "lower", True)
for scenario, label in [("chat-10k", "(e) chat 10k/s"), ("chat-50k", "(e) chat 50k/s"), ("chat-overload", "(e) chat 80k/s offered")]:
    rc, nats = step(load(scenario, "ringcast")), step(load(scenario, "nats"))
    if rc and nats:
        row(f"{label}: delivered/s", rc["delivered_per_sec"], nats["delivered_per_sec"], ",.0f", "higher")
        row(f"{label}: p50 ms", rc["p50_ms"], nats["p50_ms"], ".2f", "lower", True)
        row(f"{label}: p99 ms", rc["p99_ms"], nats["p99_ms"], ".2f", "lower", True)
        row(f"{label}: server CPU ns/event", rc.get("server_cpu_ns_per_event"), nats.get("server_cpu_ns_per_event"), ".0f", "lower", True)
        row(f"{label}: subscribers cut", rc.get("subscribers_cut", 0), nats.get("subscribers_cut", 0), ",", "zero")
        row(f"{label}: loss", rc["loss"], nats["loss"], ",", "zero")
rc, nats = load("chat-step", "ringcast"), load("chat-step", "nats")
if rc and nats:
    row("(e) chat: max sustained events/s", rc["max_sustained_deliveries_per_sec"], nats["max_sustained_deliveries_per_sec"], ",.0f", "higher")
rc, nats = step(load("burst", "ringcast")), step(load("burst", "nats"))
if rc and nats:
    row("(f) burst: subscribers cut", rc.get("subscribers_cut", 0), nats.get("subscribers_cut", 0), ",", "zero")
    row("(f) burst: loss", rc["loss"], nats["loss"], ",", "zero")
    row("(f) burst: p99 ms", rc["p99_ms"], nats["p99_ms"], ".1f", "lower", True)
rc, nats = step(load("ingress-1", "ringcast")), step(load("ingress-1", "nats"))
if rc and nats:
    row("(g) ingress, 1 connection: publishes/s", rc["delivered_per_sec"], nats["delivered_per_sec"], ",.0f", "higher")

sse = []
ws, events = step(load("fanout-ws-1k", "ringcast")), step(load("fanout-sse-1k", "ringcast"))
if ws and events:
    for what, key, spec in [("delivered/s", "delivered_per_sec", ",.0f"), ("loss", "loss", ","),
                            ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
                            ("server CPU ns/delivery", "server_cpu_ns_per_delivery", ",.0f"),
                            ("bytes read per delivery", "wire_bytes_per_delivery", ",.0f"),
                            ("subscribers cut", "subscribers_cut", ",")]:
        sse.append([what, fmt(ws.get(key, 0), spec), fmt(events.get(key, 0), spec)])

def table(header, aligns, rows, intro=()):
    """A markdown table, after a blank line and `intro` lines when given."""
    if intro:
        print()
        print("\n".join(intro))
        print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if right else "---" for right in aligns) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

table(["metric", "ringcast", "nats-server", "ringcast advantage", "better"], [0, 1, 1, 1, 0], rows)
print()
print("Advantage is ringcast/nats for higher-is-better figures and nats/ringcast for")
print("lower-is-better ones: above 1.00x means ringcast is ahead.")

def pair(rc, nats, key, spec):
    return f"{fmt(rc.get(key), spec)} / {fmt(nats.get(key), spec)}"

compression = []
for size, label in [("128", "128 B"), ("1k", "1 KiB"), ("4k", "4 KiB")]:
    for mode in ["off", "on"]:
        rc, nats = step(load(f"compress-{size}-{mode}", "ringcast")), step(load(f"compress-{size}-{mode}", "nats"))
        if rc and nats:
            compression.append([
                label, mode, fmt(rc["offered_rate"], ",.0f"),
                fmt(rc.get("wire_bytes_per_delivery"), ",.0f"), fmt(nats.get("wire_bytes_per_delivery"), ",.0f"),
                fmt(rc["server_cpu_ns_per_delivery"], ",.0f"), fmt(nats["server_cpu_ns_per_delivery"], ",.0f"),
                ratio(rc["server_cpu_ns_per_delivery"], nats["server_cpu_ns_per_delivery"]),
                pair(rc, nats, "delivered_per_sec", ",.0f"), pair(rc, nats, "loss", ","),
            ])
if compression:
    table(["payload", "deflate", "events/s", "ringcast B/delivery", "nats B/delivery", "ringcast CPU ns/delivery",
           "nats CPU ns/delivery", "CPU ringcast/nats", "delivered/s ringcast / nats", "loss ringcast / nats"],
          [0, 0, 1, 1, 1, 1, 1, 1, 1, 1], compression,
          ["Compression: 1 topic x 1000 subscribers, permessage-deflate off or on (nats-server with",
           "`compression: true` for the on rows). Bytes are what subscribers read per delivery;",
           "CPU ringcast/nats below 1.00x means ringcast spends less."])

sweep = []
rc, nats = load("fanout", "ringcast"), load("fanout", "nats")
if rc and nats:
    by_rate = {}
    for index, result in enumerate([rc, nats]):
        for s in result["steps"]:
            by_rate.setdefault(s["offered_deliveries_per_sec"], [None, None])[index] = s
    for offered, steps in sorted(by_rate.items()):
        cells = [fmt(offered, ",.0f")]
        for s in steps:
            cells += ["-"] * 5 if s is None else [
                fmt(s["p50_ms"], ".2f"), fmt(s["p99_ms"], ".1f"), fmt(s["delivered_per_sec"], ",.0f"),
                fmt(100 * max(s["loss"], 0) / max(s["expected"], 1), ".2f") + " %", fmt(s.get("subscribers_cut", 0), ",")]
        sweep.append(cells)
if sweep:
    table(["offered deliveries/s"] + [f"{name} {what}" for name in ["ringcast", "nats"]
                                      for what in ["p50 ms", "p99 ms", "delivered/s", "lost", "cut"]],
          [1] * 11, sweep,
          ["(a) wide fan-out sweep, 1 topic x 1000 subscribers, every step whatever its latency",
           "(the chart: fanout.svg); a sweep ends early only at a step that saw a connection cut.",
           "Lost is what had not arrived 2 s after the step's last publish: past saturation, where",
           "latency passes 2 s, late events count too."])

if sse:
    table(["metric", "WebSocket", "server-sent events"], [0, 1, 1], sse,
          ["ringcast, 1 topic x 1000 subscribers at the same rate, over WebSocket and over",
           "server-sent events (GET /sse):"])

split = []
for scenario, label in [("fanout-1m", "(a) wide fan-out, 1M/s"), ("ingress", "(c) ingress, per publish"),
                        ("ingress-frame", "(c) ingress, one PUB per frame, per publish"),
                        ("ingress-js", "(c) ingress, nats into JetStream, per publish"),
                        ("compress-4k-on", "4 KiB fan-out, deflate on")]:
    for target, name in [("ringcast", "ringcast"), ("nats", "nats-server")]:
        s = step(load(scenario, target))
        if s and s.get("server_user_ns_per_delivery") is not None:
            user, kernel = s["server_user_ns_per_delivery"], s["server_kernel_ns_per_delivery"]
            split.append([label, name, fmt(user, ",.0f"), fmt(kernel, ",.0f"),
                          fmt(100 * kernel / (user + kernel) if user + kernel else None, ".0f") + " %",
                          fmt(s["server_cpu_ns_per_delivery"], ",.0f")])
if split:
    table(["scenario", "server", "user ns", "kernel ns", "kernel share", "total ns (schedstat)"],
          [0, 0, 1, 1, 1, 1], split,
          ["Server CPU per delivery split into user and kernel time (/proc/PID/stat, clock ticks;",
           "the total is schedstat's, so the parts need not add up to it exactly):"])
EOF
echo "== results in $OUT"
