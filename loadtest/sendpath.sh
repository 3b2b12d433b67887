#!/usr/bin/env bash
# Two ringcast binaries side by side in one run (before and after a change to
# the send path), and nats-server as the yardstick: per scenario, ROUNDS
# rounds of before, after (and nats-server, for the NATS_SCENARIOS), each run
# on a freshly started server; the summary quotes medians.
#
#   loadtest/sendpath.sh                                  # ~25 minutes
#   QUICK=1 loadtest/sendpath.sh                          # smoke run, 1 round of 3 s windows
#   BEFORE=old/ringcast AFTER=new/ringcast loadtest/sendpath.sh
#   SIDES="before nats" ROUNDS=1 loadtest/sendpath.sh     # one binary only
#
# Scenarios (SCENARIOS, space-separated; default all but chat-step):
#   chat-10k       100 topics x 1 subscriber, 10 publishers, 128 B, one publish
#                  per frame, 10k events/s
#   chat-50k       the same at 50k events/s
#   chat-overload  the same at 80k events/s: about twice what a core sustains
#   chat-step      the same, rising from 20k events/s by 1.25x per step until
#                  a step has loss, a cut, an error or p99 > 200 ms: the
#                  capacity (not in the default list)
#   burst-q64      1 topic x 10 subscribers, one publisher sending 2048 x 1 KiB
#                  every 500 ms, pipelined; SUBSCRIBER_QUEUE_SIZE=64
#   burst-q1024    the same with SUBSCRIBER_QUEUE_SIZE=1024
#   fanout-1m      1 topic x 1000 subscribers, 1000 events/s
#   ingress-1      one connection publishing flat out, pipelined
# nats-server has no queue bound in events: burst-q64 and burst-q1024 are the
# same load for it.
#
# Each ringcast binary runs with its own defaults (before issue 10, writes
# were coalesced over a 25ms COALESCE_WINDOW; the rewrite has no such timer);
# variables set in the environment reach both.
#
# Knobs (environment): BEFORE (a binary; default: built from BEFORE_REV,
# bdea0f7, the commit before the send-path rework), AFTER
# (default $CARGO_TARGET_DIR/release/ringcast, target/ when unset), LOAD (the
# generator, likewise), OUT (default loadtest/results/<timestamp>), ROUNDS (3),
# SIDES (subset of: before after nats), SCENARIOS, NATS_SCENARIOS (default
# chat-10k chat-50k chat-overload chat-step), DURATION (10s), WARMUP (2s),
# STEP_DURATION (5s), SERVER_CPU (0), CLIENT_CPU (1), OVERLOAD_RATE (80000,
# chat-overload's offered events/s), SERVER_CPU_QUOTA (unset; a percentage of
# one core the server is held to through a cgroup, so that a rate this
# generator can offer saturates it: the way to measure real overload on a
# 2-core machine), QUICK, BUILD (0 builds
# nothing; 1, the default, builds the generator, and ringcast when AFTER is
# not given).
#
# $OUT gets per run <scenario>-<side>-<round>.json and .txt (the generator's
# results), .log (the server's), .stats.json (ringcast's /stats after the
# run), .loadavg (/proc/loadavg before and after), and summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Without BEFORE, the "before" binary is built from BEFORE_REV (default: the
# commit before the send-path rework) in a directory of its own under the
# target dir, once.
if [[ -z ${BEFORE:-} ]]; then
    BEFORE_REV=${BEFORE_REV:-bdea0f7}
    before_dir=$TARGET_DIR/sendpath-before-$BEFORE_REV
    BEFORE=$before_dir/target/release/ringcast
    if [[ ! -x $BEFORE ]]; then
        echo "== building ringcast at $BEFORE_REV (before) in $before_dir"
        rm -rf "$before_dir"
        mkdir -p "$before_dir"
        git archive "$BEFORE_REV" | tar -x -C "$before_dir"
        (cd "$before_dir" && CARGO_TARGET_DIR="$PWD/target" cargo build --release -q -p ringcast)
    fi
fi
build_after=0
if [[ -z ${AFTER:-} ]]; then
    AFTER=$TARGET_DIR/release/ringcast
    build_after=1
fi
LOAD=${LOAD:-$TARGET_DIR/release/ringcast-load}
OUT=${OUT:-loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-3s}
    WARMUP=${WARMUP:-1s}
    STEP_DURATION=${STEP_DURATION:-2s}
else
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-10s}
    WARMUP=${WARMUP:-2s}
    STEP_DURATION=${STEP_DURATION:-5s}
fi
SIDES=${SIDES:-before after nats}
SCENARIOS=${SCENARIOS:-chat-10k chat-50k chat-overload burst-q64 burst-q1024 fanout-1m ingress-1}
NATS_SCENARIOS=${NATS_SCENARIOS:-chat-10k chat-50k chat-overload chat-step}

mkdir -p "$OUT"
if [[ ${BUILD:-1} == 1 ]]; then
    echo "== building (release)"
    if [[ $build_after == 1 ]]; then
        cargo build --release -q -p ringcast -p ringcast-load
    else
        cargo build --release -q -p ringcast-load
    fi
fi
for side in $SIDES; do
    case $side in
    before | after)
        binary=$([[ $side == before ]] && echo "$BEFORE" || echo "$AFTER")
        [[ -x $binary ]] || {
            echo "$side: $binary is not an executable" >&2
            exit 1
        }
        ;;
    nats)
        if ! command -v nats-server >/dev/null; then
            echo "== installing nats-server"
            apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
        fi
        ;;
    *)
        echo "unknown side $side (before, after, nats)" >&2
        exit 1
        ;;
    esac
done

ulimit -n "$(ulimit -Hn)"

{
    for side in $SIDES; do
        case $side in
        before | after)
            binary=$([[ $side == before ]] && echo "$BEFORE" || echo "$AFTER")
            echo "$side: $binary (sha256 $(sha256sum "$binary" | cut -c1-16), $("$binary" --version 2>/dev/null || true))"
            ;;
        nats) echo "nats: $(nats-server --version)" ;;
        esac
    done
    echo "generator: $LOAD"
    echo "started: $(date -u +%FT%TZ); cores: $(nproc); server on CPU $SERVER_CPU${SERVER_CPU_QUOTA:+ held to $SERVER_CPU_QUOTA% of it}, generator on CPU $CLIENT_CPU"
    echo "rounds: $ROUNDS; sides: $SIDES; scenarios: $SCENARIOS; nats scenarios: $NATS_SCENARIOS"
    echo "duration: $DURATION; warmup: $WARMUP; step duration: $STEP_DURATION"
} >"$OUT/setup.txt"
cat "$OUT/setup.txt"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The server of the run in progress; nothing else is ever stopped.
server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# SERVER_CPU_QUOTA: the server's share of one core, in a cgroup of its own
# (10 ms periods, so a throttled server stalls for milliseconds, not tens).
CGROUP=
if [[ -n ${SERVER_CPU_QUOTA:-} ]]; then
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        CGROUP=/sys/fs/cgroup/ringcast-load-server
        mkdir -p "$CGROUP"
        echo "$((SERVER_CPU_QUOTA * 100)) 10000" >"$CGROUP/cpu.max"
    else
        CGROUP=/sys/fs/cgroup/cpu/ringcast-load-server
        mkdir -p "$CGROUP"
        echo 10000 >"$CGROUP/cpu.cfs_period_us"
        echo "$((SERVER_CPU_QUOTA * 100))" >"$CGROUP/cpu.cfs_quota_us"
    fi
fi
throttle() { # pid
    if [[ -n $CGROUP ]]; then
        echo "$1" >"$CGROUP/cgroup.procs"
    fi
}

# Sets server_pid, url and port.
start_server() { # side scenario run-name
    local i
    port=$(free_port)
    case $1 in
    before | after)
        local binary queue=()
        binary=$([[ $1 == before ]] && echo "$BEFORE" || echo "$AFTER")
        case $2 in
        burst-q64) queue=(SUBSCRIBER_QUEUE_SIZE=64) ;;
        burst-q1024) queue=(SUBSCRIBER_QUEUE_SIZE=1024) ;;
        esac
        env RUST_LOG="${RUST_LOG:-warn}" HOST=127.0.0.1 PORT="$port" "${queue[@]}" \
            taskset -c "$SERVER_CPU" "$binary" >"$OUT/$3.log" 2>&1 &
        server_pid=$!
        throttle "$server_pid"
        url=ws://127.0.0.1:$port/ws
        for i in $(seq 100); do
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
                return
            fi
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        ;;
    nats)
        local client_port
        client_port=$(free_port)
        cat >"$OUT/$3.conf" <<EOF
listen: 127.0.0.1:$client_port
websocket { listen: "127.0.0.1:$port", no_tls: true }
max_payload: 1048576
EOF
        taskset -c "$SERVER_CPU" nats-server -c "$OUT/$3.conf" >"$OUT/$3.log" 2>&1 &
        server_pid=$!
        throttle "$server_pid"
        url=ws://127.0.0.1:$port
        for i in $(seq 100); do
            port_open "$port" && return
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        ;;
    esac
    echo "$1 did not start; its log:" >&2
    cat "$OUT/$3.log" >&2
    exit 1
}

args_of() { # scenario
    case $1 in
    chat-10k) echo "--scenario chat --rate 10000 --duration $DURATION --warmup $WARMUP" ;;
    chat-50k) echo "--scenario chat --rate 50000 --duration $DURATION --warmup $WARMUP" ;;
    chat-overload) echo "--scenario chat --rate ${OVERLOAD_RATE:-80000} --duration $DURATION --warmup $WARMUP" ;;
    # Capacity: the last step without loss, cut or error and p99 <= 200 ms
    # (loose: on a shared machine p99 spikes of 50-100 ms come and go).
    chat-step) echo "--scenario chat --step --rate 20000 --step-factor 1.25 --max-rate 200000 --max-p99 200ms --step-duration $STEP_DURATION --warmup $WARMUP" ;;
    burst-q64 | burst-q1024) echo "--scenario burst --burst-events 2048 --burst-interval 500ms --duration $DURATION --warmup $WARMUP" ;;
    fanout-1m) echo "--scenario fanout --rate 1000 --duration $DURATION --warmup $WARMUP" ;;
    ingress-1) echo "--scenario ingress --publishers 1 --duration $DURATION --warmup $WARMUP" ;;
    *)
        echo "unknown scenario $1" >&2
        exit 1
        ;;
    esac
}
# Fail on a typo before anything runs.
for scenario in $SCENARIOS; do args_of "$scenario" >/dev/null; done

for scenario in $SCENARIOS; do
    for round in $(seq "$ROUNDS"); do
        for side in $SIDES; do
            if [[ $side == nats && " $NATS_SCENARIOS " != *" $scenario "* ]]; then
                continue
            fi
            name=$scenario-$side-$round
            echo "== $name"
            start_server "$side" "$scenario" "$name"
            cat /proc/loadavg >"$OUT/$name.loadavg"
            # shellcheck disable=SC2046
            if ! taskset -c "$CLIENT_CPU" "$LOAD" run --target "$([[ $side == nats ]] && echo nats || echo ringcast)" \
                --url "$url" $(args_of "$scenario") --server-pid "$server_pid" \
                --json "$OUT/$name.json" | tee "$OUT/$name.txt"; then
                echo "== $name: the generator failed" | tee -a "$OUT/failed.txt"
            fi
            cat /proc/loadavg >>"$OUT/$name.loadavg"
            if [[ $side != nats ]]; then
                curl -fsS "http://127.0.0.1:$port/stats" >"$OUT/$name.stats.json" 2>/dev/null || true
            fi
            stop_server
        done
    done
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import glob, json, os, re, statistics, sys

out = sys.argv[1]
sides = {"before": "before", "after": "after", "nats": "nats-server"}

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

runs = {}  # (scenario, side) -> [(round, result, server /stats, loadavg)]
for path in glob.glob(os.path.join(out, "*.json")):
    match = re.fullmatch(r"(.+)-(before|after|nats)-(\d+)\.json", os.path.basename(path))
    if not match or match[1].endswith(".stats"):
        continue
    result = load(path)
    if not result:
        continue
    base = path[: -len(".json")]
    stats = load(base + ".stats.json")
    try:
        with open(base + ".loadavg") as f:
            loads = [float(line.split()[0]) for line in f if line.strip()]
    except OSError:
        loads = []
    runs.setdefault((match[1], match[2]), []).append((int(match[3]), result, stats, loads))
for found in runs.values():
    found.sort(key=lambda run: run[0])

order = ["chat-10k", "chat-50k", "chat-overload", "chat-step", "burst-q64", "burst-q1024", "fanout-1m", "ingress-1"]
scenarios = sorted({scenario for scenario, _ in runs}, key=lambda s: (order.index(s) if s in order else len(order), s))

def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def steps(scenario, side):
    return [result["steps"][0] for _, result, _, _ in runs.get((scenario, side), []) if result["steps"]]

def med(scenario, side, key):
    return median([step.get(key) for step in steps(scenario, side)])

def count(scenario, side, key):
    """Median, and the worst run when it differs: one cut in one round matters."""
    values = [step.get(key) or 0 for step in steps(scenario, side)]
    if not values:
        return "n/a"
    mid, worst = statistics.median(values), max(values)
    text = f"{mid:,.0f}"
    return text if worst == mid else f"{text} (max {worst:,})"

def server_cuts(scenario, side):
    values = [stats.get("slow_consumer_disconnects") for _, _, stats, _ in runs.get((scenario, side), []) if stats]
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mid, worst = statistics.median(values), max(values)
    return f"{mid:,.0f}" if worst == mid else f"{mid:,.0f} (max {worst:,})"

def capacity(side):
    found = [result.get("max_sustained_deliveries_per_sec") for _, result, _, _ in runs.get(("chat-step", side), [])]
    return median([value or 0 for value in found]) if found else None

print("# Send path: before and after, nats-server as the yardstick")
print()
with open(os.path.join(out, "setup.txt")) as f:
    print("```")
    print(f.read().rstrip())
    print("```")
print()
print("Medians over the rounds (each run on a freshly started server). Cuts, loss, gaps")
print("and errors: median, and the worst run as '(max N)' when it differs.")
print()
print("| scenario | server | runs | offered ev/s | delivered/s | p50 ms | p99 ms | p99.9 ms | CPU ns/event | CPU ns/delivery | subscribers cut | SLOW_CONSUMER seen | server slow-consumer closes | loss | gaps | publish errors | unacked |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for scenario in scenarios:
    for side in sides:
        found = runs.get((scenario, side))
        if not found:
            continue
        if scenario == "chat-step":
            maxima = [result.get("max_sustained_deliveries_per_sec") or 0 for _, result, _, _ in found]
            spread = f" ({min(maxima):,.0f}-{max(maxima):,.0f})" if len(maxima) > 1 else ""
            # Every run still sustained its last step: it stopped at --max-rate.
            capped = ">= " if all(result["steps"] and result["steps"][-1]["sustained"] for _, result, _, _ in found) else ""
            print(f"| chat-step: max sustained events/s | {sides[side]} | {len(found)} | | {capped}{statistics.median(maxima):,.0f}{spread} |" + " |" * 12)
            continue
        print("| " + " | ".join([
            scenario, sides[side], str(len(found)),
            fmt(med(scenario, side, "offered_rate"), ",.0f"),
            fmt(med(scenario, side, "delivered_per_sec"), ",.0f"),
            fmt(med(scenario, side, "p50_ms"), ".2f"),
            fmt(med(scenario, side, "p99_ms"), ".2f"),
            fmt(med(scenario, side, "p999_ms"), ".2f"),
            fmt(med(scenario, side, "server_cpu_ns_per_event"), ",.0f"),
            fmt(med(scenario, side, "server_cpu_ns_per_delivery"), ",.0f"),
            count(scenario, side, "subscribers_cut"),
            count(scenario, side, "slow_consumer_errors"),
            server_cuts(scenario, side),
            count(scenario, side, "loss"),
            count(scenario, side, "seq_gaps") if side != "nats" else "-",
            count(scenario, side, "publish_errors"),
            count(scenario, side, "unanswered_publishes") if side != "nats" else "-",
        ]) + " |")
print()
print("CPU ns/event: the server's CPU time in the measured window per event published in it;")
print("per delivery: per event received (per publish for ingress-1, whose delivered/s counts")
print("publishes). Latency runs from each event's scheduled send time (open loop). unacked:")
print("publishes with neither ack nor error when the 2 s drain ended (ringcast).")

# Issue 10's targets, where this run has the figures.
def check(ok):
    return "n/a" if ok is None else ("met" if ok else "**not met**")

def both(a, b):
    return None if a is None or b is None else (a, b)

lines = []
for side in ("before", "after"):
    if not any(key[1] == side for key in runs):
        continue
    p50, p99 = med("chat-10k", side, "p50_ms"), med("chat-10k", side, "p99_ms")
    if p50 is not None:
        lines.append((side, "chat 10k/s: p50 <= 1 ms, p99 <= 2 ms", f"{p50:.2f} / {p99:.2f} ms", check(p50 <= 1 and p99 <= 2)))
    p99 = med("chat-50k", side, "p99_ms")
    if p99 is not None:
        lines.append((side, "chat 50k/s: p99 <= 5 ms", f"{p99:.2f} ms", check(p99 <= 5)))
    for scenario in ("chat-10k", "chat-50k"):
        pair = both(med(scenario, side, "server_cpu_ns_per_event"), med(scenario, "nats", "server_cpu_ns_per_event"))
        if pair:
            lines.append((side, f"{scenario}: CPU per event <= nats-server's", f"{pair[0]:,.0f} vs {pair[1]:,.0f} ns", check(pair[0] <= pair[1])))
    delivered = med("chat-overload", side, "delivered_per_sec")
    if delivered is not None:
        cuts = max(step.get("subscribers_cut", 0) for step in steps("chat-overload", side))
        cap = capacity(side)
        offered = med("chat-overload", side, "offered_rate")
        if cap and offered < 1.5 * cap:
            lines.append((side, "chat-overload: delivered >= 90% of capacity (chat-step)", f"{offered:,.0f}/s offered, capacity {cap:,.0f}/s", "n/a: not an overload"))
        elif cap:
            lines.append((side, "chat-overload: delivered >= 90% of capacity (chat-step)", f"{delivered:,.0f} of {cap:,.0f}/s", check(delivered >= 0.9 * cap)))
        lines.append((side, "chat-overload: zero subscribers cut", f"{cuts} (worst run)", check(cuts == 0)))
    for scenario in ("burst-q64", "burst-q1024"):
        if steps(scenario, side):
            cuts = max(step.get("subscribers_cut", 0) for step in steps(scenario, side))
            loss = max(step["loss"] for step in steps(scenario, side))
            lines.append((side, f"{scenario}: zero cuts, zero loss", f"{cuts} cut, {loss:,} lost (worst run)", check(cuts == 0 and loss == 0)))
    p99 = med("fanout-1m", side, "p99_ms")
    if p99 is not None:
        lines.append((side, "fanout-1m: p99 <= 30 ms", f"{p99:.1f} ms", check(p99 <= 30)))
    if side == "after":
        pair = both(med("fanout-1m", "after", "server_cpu_ns_per_delivery"), med("fanout-1m", "before", "server_cpu_ns_per_delivery"))
        if pair:
            lines.append((side, "fanout-1m: CPU per delivery no worse than before", f"{pair[0]:,.0f} vs {pair[1]:,.0f} ns", check(pair[0] <= pair[1])))
if lines:
    print()
    print("## Issue 10's load targets")
    print()
    print("| binary | target | measured (median) | |")
    print("|---|---|---:|---|")
    for line in lines:
        print("| " + " | ".join(line) + " |")

loads = [load for found in runs.values() for _, _, _, values in found for load in values]
if loads:
    print()
    print(f"1-minute load average over the runs: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores"
          " (above about 2, something else was competing for the cores and CPU figures are noisy).")
failed = os.path.join(out, "failed.txt")
if os.path.exists(failed):
    print()
    print("Failed runs:")
    with open(failed) as f:
        print(f.read().rstrip())
EOF
echo "== results in $OUT"
