#!/usr/bin/env bash
# What cluster mode costs: the same fan-out (1 topic, SUBSCRIBERS subscribers,
# 128-byte payloads, RATE events/s, one publisher) against
#   single    one ringcast node in single-node mode, no NATS: the baseline;
#   cluster2  two nodes in cluster mode sharing a NATS JetStream backplane,
#             subscribers split evenly across them, the publisher and topic
#             creation on the first;
#   cluster1  one node in cluster mode: the backplane's cost without the split;
#   cluster2r3  cluster2 on three clustered nats-servers with
#             CLUSTER_STREAM_REPLICAS=3: what replication costs (not in the
#             default CONFIGS; e.g. CONFIGS="cluster2 cluster2r3" STEP=0).
# Every configuration starts from fresh processes (and a fresh JetStream
# store), in turns, REPEAT times; the summary quotes medians. Then a step run
# (max sustained deliveries/s) for single and cluster2, REPEAT times too.
#
#   loadtest/cluster.sh                 # full run, ~12 minutes
#   QUICK=1 loadtest/cluster.sh         # smoke run, ~2 minutes
#
# nats-server and the ringcast nodes share SERVER_CPU, the load generator gets
# CLIENT_CPU: the servers have the same CPU budget in every configuration.
# Knobs (environment): OUT (default loadtest/results/cluster-<timestamp>),
# SERVER_CPU (0), CLIENT_CPU (1), RATE (events/s of the fixed runs, 1000),
# SUBSCRIBERS (1000), REPEAT (3), DURATION (10s), WARMUP (2s), STEP (1 runs
# the step runs), STEP_RATE (first step, 500 events/s), STEP_DURATION (5s),
# CONFIGS (space-separated subset of: single cluster2 cluster1 cluster2r3), QUICK,
# BUILD (0 uses the binaries already in target/release), RUST_LOG (default
# warn, with the nodes' backplane events and event-stream errors). Every
# other variable reaches the nodes unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-loadtest/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RATE=${RATE:-1000}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
STEP=${STEP:-1}
STEP_RATE=${STEP_RATE:-500}
CONFIGS=${CONFIGS:-single cluster2 cluster1}
if [[ ${QUICK:-0} == 1 ]]; then
    REPEAT=${REPEAT:-1}
    DURATION=${DURATION:-3s}
    WARMUP=${WARMUP:-1s}
    STEP_DURATION=${STEP_DURATION:-2s}
else
    REPEAT=${REPEAT:-3}
    DURATION=${DURATION:-10s}
    WARMUP=${WARMUP:-2s}
    STEP_DURATION=${STEP_DURATION:-5s}
fi
export RUST_LOG=${RUST_LOG:-warn,ringcast::cluster=debug}

mkdir -p "$OUT"
if [[ ${BUILD:-1} == 1 ]]; then
    echo "== building (release)"
    cargo build --release -q -p ringcast -p ringcast-load
fi
LOAD=target/release/ringcast-load
NATS_SERVER=$(command -v nats-server) || {
    echo "nats-server (2.9+, for JetStream) is not installed" >&2
    exit 1
}

ulimit -n "$(ulimit -Hn)"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The processes of the configuration under test, in start order; nothing
# else is ever stopped.
pids=()
store_dir=
stop_all() {
    local i
    # Newest first: the nodes go before nats-server, so their logs show no
    # backplane loss at the end.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
    pids=()
    if [[ -n $store_dir ]]; then
        rm -rf "$store_dir"
        store_dir=
    fi
}
trap stop_all EXIT

# Starts one nats-server, or with a count of 3 three clustered ones; sets
# nats_url (every server, comma-separated), nats_monitor (the first one's
# HTTP monitoring base), nats_pid (the first one's) and nats_pids.
start_nats() { # log-prefix [count]
    local count=${2:-1} i port monitor_port cluster_ports=() routes=() args
    store_dir=$(mktemp -d)
    nats_pids=()
    nats_url=
    for ((i = 1; i <= count; i++)); do
        cluster_ports+=("$(free_port)")
        routes+=("nats://127.0.0.1:${cluster_ports[-1]}")
    done
    for ((i = 1; i <= count; i++)); do
        port=$(free_port)
        monitor_port=$(free_port)
        args=(-js -a 127.0.0.1 -p "$port" -m "$monitor_port" -sd "$store_dir/$i")
        if ((count > 1)); then
            args+=(--server_name "nats$i" --cluster_name ringcast-load
                --cluster "${routes[$((i - 1))]}" --routes "$(IFS=,; echo "${routes[*]}")")
        fi
        taskset -c "$SERVER_CPU" "$NATS_SERVER" "${args[@]}" >"$1$( ((count > 1)) && echo "$i").log" 2>&1 &
        nats_pids+=("$!")
        pids+=("$!")
        for _ in $(seq 50); do
            port_open "$port" && break
            sleep 0.1
        done
        port_open "$port" || {
            echo "nats-server did not start; its log:" >&2
            cat "$1"*.log >&2
            exit 1
        }
        nats_url+=${nats_url:+,}nats://127.0.0.1:$port
        if ((i == 1)); then
            nats_monitor=http://127.0.0.1:$monitor_port
        fi
    done
    nats_pid=${nats_pids[0]}
    # A clustered JetStream places replicated streams once it has a leader
    # and knows every server.
    for _ in $(seq 100); do
        if ((count == 1)) || curl -fsS "$nats_monitor/jsz" 2>/dev/null |
            python3 -c 'import json, sys; meta = json.load(sys.stdin).get("meta_cluster", {}); sys.exit(not (meta.get("leader") and len(meta.get("replicas") or []) + 1 >= int(sys.argv[1])))' "$count"; then
            return
        fi
        sleep 0.2
    done
    echo "the NATS cluster did not form; the first server's log:" >&2
    cat "${1}1.log" >&2
    exit 1
}

# Starts a node and waits for /health 200 (in cluster mode: backplane ready);
# appends to node_urls and node_pids.
start_node() { # log [nats url [stream replicas]]
    local port pid
    port=$(free_port)
    env HOST=127.0.0.1 PORT="$port" ${2:+CLUSTER_NATS_URL=$2} ${3:+CLUSTER_STREAM_REPLICAS=$3} \
        taskset -c "$SERVER_CPU" target/release/ringcast >"$1" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 300); do
        if curl -fsS -o "$1.health" "http://127.0.0.1:$port/health" 2>/dev/null; then
            if [[ -n ${2:-} ]] && ! grep -q '"cluster"' "$1.health"; then
                echo "the node on port $port is not in cluster mode (/health: $(cat "$1.health")):" \
                    "this ringcast build ignores CLUSTER_NATS_URL" >&2
                exit 1
            fi
            node_urls+=("ws://127.0.0.1:$port/ws")
            node_pids+=("$pid")
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "ringcast on port $port did not become healthy; its log:" >&2
    cat "$1" >&2
    exit 1
}

start_config() { # config run-name
    node_urls=()
    node_pids=()
    nats_pid=
    nats_pids=()
    case $1 in
    single)
        start_node "$OUT/$2-node1.log"
        ;;
    cluster1 | cluster2)
        start_nats "$OUT/$2-nats"
        start_node "$OUT/$2-node1.log" "$nats_url"
        if [[ $1 == cluster2 ]]; then
            start_node "$OUT/$2-node2.log" "$nats_url"
        fi
        ;;
    cluster2r3)
        start_nats "$OUT/$2-nats" 3
        start_node "$OUT/$2-node1.log" "$nats_url" 3
        start_node "$OUT/$2-node2.log" "$nats_url" 3
        ;;
    *)
        echo "unknown configuration $1 (single, cluster2, cluster1, cluster2r3)" >&2
        exit 1
        ;;
    esac
}

# Runs the generator against the configuration started last, then keeps each
# node's /stats and JetStream's stream state, and stops everything.
run_load() { # run-name generator-args...
    local name=$1 args=() url pid i
    shift
    for url in "${node_urls[@]}"; do
        args+=(--url "$url")
    done
    for pid in "${node_pids[@]}"; do
        args+=(--server-pid "$pid")
    done
    if [[ -n $nats_pid ]]; then
        args+=(--backplane-pid "$nats_pid")
    fi
    local nats_cpu_before
    nats_cpu_before=$(nats_cpu_ticks)
    taskset -c "$CLIENT_CPU" "$LOAD" run --scenario fanout --topics 1 \
        --subscribers-per-topic "$SUBSCRIBERS" --payload-bytes 128 --warmup "$WARMUP" \
        "${args[@]}" "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
    # The generator measures the first nats-server only; every server's CPU
    # over the whole run scales its figure to all of them.
    if [[ -n $nats_pid ]]; then
        echo "$nats_cpu_before $(nats_cpu_ticks)" >"$OUT/$name-nats-cpu.txt"
    fi
    for i in "${!node_urls[@]}"; do
        url=${node_urls[$i]#ws://}
        curl -fsS "http://${url%/ws}/stats" >"$OUT/$name-node$((i + 1)).stats.json" || true
    done
    if [[ -n $nats_pid ]]; then
        curl -fsS "$nats_monitor/jsz?streams=true" >"$OUT/$name-jsz.json" || true
    fi
    stop_all
}

# CPU ticks (utime + stime) of the first nats-server and of all of them.
nats_cpu_ticks() {
    local pid first= all=0 ticks
    for pid in "${nats_pids[@]}"; do
        ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        first=${first:-$ticks}
        all=$((all + ticks))
    done
    echo "${first:-0} $all"
}

echo "== nats-server and the ringcast nodes share CPU $SERVER_CPU, the generator runs on CPU $CLIENT_CPU"
for rep in $(seq "$REPEAT"); do
    for config in $CONFIGS; do
        name=fixed-$config-$rep
        echo "== $name: $RATE events/s to $SUBSCRIBERS subscribers"
        start_config "$config" "$name"
        run_load "$name" --rate "$RATE" --duration "$DURATION"
    done
done
if [[ $STEP == 1 ]]; then
    for rep in $(seq "$REPEAT"); do
        for config in $CONFIGS; do
            [[ $config == cluster1 ]] && continue
            name=step-$config-$rep
            echo "== $name: from $STEP_RATE events/s up"
            start_config "$config" "$name"
            run_load "$name" --step --rate "$STEP_RATE" --step-factor 1.25 --step-duration "$STEP_DURATION"
        done
    done
fi

python3 - "$OUT" "$SUBSCRIBERS" "$SERVER_CPU" "$CLIENT_CPU" "$(nproc)" <<'EOF' | tee "$OUT/summary.md"
import glob, json, os, re, statistics, sys

out, subscribers, server_cpu, client_cpu, cores = sys.argv[1:]
labels = {
    "single": "(a) 1 node, single-node mode",
    "cluster2": "(b) 2 nodes, cluster mode",
    "cluster1": "(c) 1 node, cluster mode",
    "cluster2r3": "(d) 2 nodes, cluster mode, 3 NATS servers, 3 replicas",
}

def load(path):
    with open(path) as f:
        return json.load(f)

def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)

def results(kind, config):
    """The generator's results of a configuration's runs of one kind, in run order."""
    paths = glob.glob(os.path.join(out, f"{kind}-{config}-*.json"))
    runs = sorted((int(match[1]), path) for path in paths
                  if (match := re.fullmatch(rf"{kind}-{config}-(\d+)\.json", os.path.basename(path))))
    return [load(path) for _, path in runs]

def nats_scale(config, run):
    """All nats-servers' CPU over the first one's, over a fixed run."""
    path = os.path.join(out, f"fixed-{config}-{run}-nats-cpu.txt")
    if not os.path.exists(path):
        return None
    first_before, all_before, first_after, all_after = map(int, open(path).read().split())
    return (all_after - all_before) / max(first_after - first_before, 1)

def fixed_steps(config):
    steps = []
    for run, result in enumerate(results("fixed", config), 1):
        step = dict(result["steps"][0])
        scale = nats_scale(config, run)
        ns = step.get("backplane_cpu_ns_per_delivery")
        step["all_nats_cpu_ns_per_delivery"] = None if ns is None or scale is None else ns * scale
        steps.append(step)
    return steps

fixed = {config: fixed_steps(config) for config in labels}
fixed = {config: steps for config, steps in fixed.items() if steps}

def values(config, key):
    return [step[key] for step in fixed[config] if step.get(key) is not None]

def median(config, key):
    found = values(config, key)
    return statistics.median(found) if found else None

def with_range(config, key):
    found = values(config, key)
    if len(found) < 2:
        return fmt(median(config, key), ".1f")
    return f"{median(config, key):.1f} ({min(found):.1f}-{max(found):.1f})"

def added(config, key):
    if config == "single" or "single" not in fixed:
        return ""
    ours, baseline = median(config, key), median("single", key)
    return fmt(None if ours is None or baseline is None else ours - baseline, "+.1f")

runs = max((len(steps) for steps in fixed.values()), default=0)
print(f"Fan-out: 1 topic x {subscribers} subscribers, 128-byte payloads, one publisher;"
      f" medians of {runs} run(s) per configuration (p99: range in brackets).")
print(f"Everything shares {cores} shared cores: nats-server and the ringcast node(s) on CPU"
      f" {server_cpu}, the load generator on CPU {client_cpu}.")
print()
print("| configuration | offered del/s | delivered/s | loss | gaps | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | nodes CPU ns/del | NATS CPU ns/del | all NATS CPU ns/del |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for config, steps in fixed.items():
    print("| " + " | ".join([
        labels[config],
        fmt(median(config, "offered_deliveries_per_sec"), ",.0f"),
        fmt(median(config, "delivered_per_sec"), ",.0f"),
        f"{sum(step['loss'] for step in steps):,}",
        f"{sum(step['seq_gaps'] or 0 for step in steps):,}",
        fmt(median(config, "p50_ms"), ".1f"),
        with_range(config, "p99_ms"),
        fmt(median(config, "p999_ms"), ".1f"),
        added(config, "p50_ms"),
        added(config, "p99_ms"),
        fmt(median(config, "server_cpu_ns_per_delivery"), ".0f"),
        fmt(median(config, "backplane_cpu_ns_per_delivery"), ".0f"),
        fmt(median(config, "all_nats_cpu_ns_per_delivery"), ".0f"),
    ]) + " |")
print()
print("Loss (deliveries missing after a 2 s drain) and gaps (events missing from a")
print("publisher's counter sequence) are summed over the runs; added latency is the")
print("difference of the medians from (a). Nodes CPU is summed over the ringcast")
print("processes, NATS CPU is the first nats-server's, both per delivery; all NATS")
print("CPU scales it by every server's CPU over the first one's across the run.")

def stopped_by(result):
    last = result["steps"][-1]
    if last["sustained"]:
        return "never stopped"
    problems = [f"p99 {fmt(last['p99_ms'], '.1f')} ms"]
    if last["loss"]:
        problems.append(f"loss {last['loss']:,}")
    if last["publish_errors"] + last["disconnects"]:
        problems.append(f"errors {last['publish_errors'] + last['disconnects']}")
    return f"{last['offered_deliveries_per_sec'] / 1e6:.2f}M offered, " + ", ".join(problems)

step_rows = []
for config in labels:
    runs = results("step", config)
    if not runs:
        continue
    # A run whose first step already failed sustained nothing.
    maxima = [result["max_sustained_deliveries_per_sec"] or 0 for result in runs]
    spread = f" ({min(maxima):,.0f}-{max(maxima):,.0f})" if len(maxima) > 1 else ""
    stops = "; ".join(f"run {i}: {stopped_by(result)}" for i, result in enumerate(runs, 1))
    step_rows.append((labels[config], f"{statistics.median(maxima):,.0f}{spread}", stops))
if step_rows:
    print()
    print("| configuration | max sustained deliveries/s, median (range) | first step not sustained |")
    print("|---|---:|---|")
    for row in step_rows:
        print("| " + " | ".join(row) + " |")

# Did every event published reach JetStream, and every node? The event
# stream's last sequence is the number JetStream stored (the run's topic is
# its only subject); a node's /stats `published` counts the events it took
# from the stream and fanned out.
mismatches = []
for path in sorted(glob.glob(os.path.join(out, "*-jsz.json"))):
    name = os.path.basename(path)[: -len("-jsz.json")]
    published = sum(step["published"] for step in load(os.path.join(out, name + ".json"))["steps"])
    streams = [stream for account in load(path).get("account_details", [])
               for stream in account.get("stream_detail", []) if stream["name"] == "RINGCAST"]
    stored = streams[0]["state"]["last_seq"] if streams else None
    fanned_out = [load(stats).get("published") for stats in
                  sorted(glob.glob(os.path.join(out, f"{name}-node*.stats.json")))]
    if any(count != published for count in [stored, *fanned_out]):
        nodes = ", ".join(fmt(count, ",") for count in fanned_out)
        mismatches.append(f"- {name}: {published:,} events published, JetStream stored"
                          f" {fmt(stored, ',')}, the nodes fanned out {nodes}")
if mismatches:
    print()
    print("\n".join(mismatches))

# Warnings, errors and backplane events other than connecting that the
# servers logged, as evidence for anything odd above.
ansi = re.compile(r"\x1b\[[0-9;]*m")
noteworthy = re.compile(r"\b(WARN|ERROR)\b|\[(WRN|ERR|FTL)\]|Slow Consumer|event stream|cluster backplane event=(?!connected|closed)")
print()
for config in labels:
    logs = [path for path in sorted(glob.glob(os.path.join(out, "*.log")))
            if re.fullmatch(rf"(fixed|step)-{config}(-\d+)?-(node\d|nats\d?)\.log", os.path.basename(path))]
    if not logs:
        continue
    lines = []
    for path in logs:
        with open(path, errors="replace") as f:
            plain = (ansi.sub("", line).strip() for line in f)
            lines += [(os.path.basename(path), line) for line in plain if noteworthy.search(line)]
    first = f"; first, in {lines[0][0]}: `{lines[0][1][:300]}`" if lines else ""
    print(f"- {labels[config]}: {len(lines)} warning, error or backplane event line(s) in the server logs{first}")
EOF
echo "== results in $OUT"
