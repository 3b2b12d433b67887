#!/usr/bin/env bash
# Two ringcast builds side by side: compare.sh's scenarios against BEFORE,
# then AFTER, alternated ROUNDS times in one run (so both see the same
# machine), and the median of each figure per build with the after/before
# ratio.
#
#   loadtest/before_after.sh BEFORE_BINARY AFTER_BINARY
#
# Knobs (environment): OUT, ROUNDS (3), SCENARIOS (fanout-1m ingress
# chat-10k), SUMMARY_ONLY (1: summarise OUT's rounds again, running none),
# LOAD (the load generator; both builds are driven by the same one), and
# compare.sh's own (QUICK, SERVER_CPU, CLIENT_CPU, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2
    exit 2
fi
before=$(realpath "$1")
after=$(realpath "$2")
OUT=${OUT:-loadtest/results/before-after-$(date -u +%Y%m%dT%H%M%SZ)}
ROUNDS=${ROUNDS:-3}
export SCENARIOS=${SCENARIOS:-fanout-1m ingress chat-10k}
export TARGETS=ringcast BUILD=0
export LOAD=${LOAD:-${CARGO_TARGET_DIR:-target}/release/ringcast-load}
mkdir -p "$OUT"

if [[ ${SUMMARY_ONLY:-0} == 1 ]]; then
    ROUNDS=$(find "$OUT" -maxdepth 1 -name 'before-*.log' | wc -l)
else
    for round in $(seq "$ROUNDS"); do
        for build in before after; do
            binary=$before
            [[ $build == after ]] && binary=$after
            echo "== round $round: $build ($binary)"
            RINGCAST=$binary OUT="$OUT/$build-$round" loadtest/compare.sh >"$OUT/$build-$round.log"
        done
    done
fi

python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/summary.md"
import json, os, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])
figures = {
    "fanout-1m": [("delivered/s", "delivered_per_sec", ",.0f"), ("p50 ms", "p50_ms", ".2f"),
                  ("p99 ms", "p99_ms", ".2f"), ("loss", "loss", ",.0f"),
                  ("server CPU ns/delivery", "server_cpu_ns_per_delivery", ",.0f")],
    "ingress": [("publishes/s", "delivered_per_sec", ",.0f"),
                ("server user ns/publish", "server_user_ns_per_delivery", ",.0f"),
                ("server kernel ns/publish", "server_kernel_ns_per_delivery", ",.0f")],
    "ingress-frame": [("publishes/s", "delivered_per_sec", ",.0f")],
    "chat-10k": [("delivered/s", "delivered_per_sec", ",.0f"), ("p50 ms", "p50_ms", ".3f"),
                 ("p99 ms", "p99_ms", ".2f"), ("server CPU ns/event", "server_cpu_ns_per_event", ",.0f")],
    "idle": [("RSS KiB per connection", "rss_kib_per_connection", ".2f")],
}
figures["chat-50k"] = figures["chat-10k"]

def values(build, scenario, key):
    found = []
    for round in range(1, rounds + 1):
        path = os.path.join(out, f"{build}-{round}", f"{scenario}-ringcast.json")
        if os.path.exists(path):
            run = json.load(open(path))
            # The idle scenario has no steps, its figures are under "idle".
            measured = (run.get("steps") or [run.get("idle") or {}])[0]
            if measured.get(key) is not None:
                found.append(measured[key])
    return found

print(f"Medians of {rounds} alternated rounds per build.")
print()
print("| scenario | figure | before | after | after/before | runs (before; after) |")
print("|---|---|---:|---:|---:|---|")
for scenario in os.environ.get("SCENARIOS", "").split():
    for label, key, spec in figures.get(scenario, []):
        b, a = values("before", scenario, key), values("after", scenario, key)
        if not b or not a:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        ratio = f"{ma / mb:.2f}" if mb else "n/a"
        runs = f"{', '.join(format(v, spec) for v in b)}; {', '.join(format(v, spec) for v in a)}"
        print(f"| {scenario} | {label} | {mb:{spec}} | {ma:{spec}} | {ratio} | {runs} |")
EOF
echo "== results in $OUT"
