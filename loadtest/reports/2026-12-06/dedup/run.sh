#!/usr/bin/env bash
# The dedup window's cost at full ingress rate, and a broadcast's cost.
#
#   loadtest/reports/2026-12-06/dedup/run.sh RINGCAST LOAD
#
# 1. before_after.sh's ingress row (compare.sh, ringcast only), the same
#    binary with DEDUP_WINDOW=0s ("before") and 2m ("after"), alternated
#    ROUNDS (3) times; medians in ingress/summary.md.
# 2. callgrind-run.sh (../restructure/) twice each way: instructions per
#    event of the chat scenario.
# 3. broadcast_cost.py: POST /broadcast to 1000 topics, without and with a
#    subscriber per topic (PYTHON: an interpreter with httpx and websockets).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ringcast=$(realpath "$1") load=$(realpath "$2")
cd "$here/../../../.."
printf '#!/usr/bin/env bash\nexec %s 0s %s "$@"\n' "$here/with-window.sh" "$ringcast" >"$here/off.sh"
printf '#!/usr/bin/env bash\nexec %s 2m %s "$@"\n' "$here/with-window.sh" "$ringcast" >"$here/on.sh"
chmod +x "$here/off.sh" "$here/on.sh"
OUT="$here/ingress" SCENARIOS=ingress LOAD=$load ROUNDS=${ROUNDS:-3} \
    loadtest/before_after.sh "$here/off.sh" "$here/on.sh"
mkdir -p "$here/callgrind"
for round in 1 2; do
    for window in 0s 2m; do
        DEDUP_WINDOW=$window LOAD=$load OUT="$here/callgrind" \
            loadtest/reports/2026-12-06/restructure/callgrind-run.sh "window-$window-$round" "$ringcast"
    done
done
PORT=${PORT:-18190}
for subscribers in "" --subscribers; do
    PORT=$PORT HOST=127.0.0.1 RUST_LOG=warn taskset -c 0 "$ringcast" >"$here/broadcast.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
    echo "== broadcast to 1000 topics ${subscribers:-without subscribers}"
    taskset -c 1 "${PYTHON:-python3}" "$here/broadcast_cost.py" "http://127.0.0.1:$PORT" "$pid" \
        --runs 300 $subscribers
    kill -TERM "$pid"
    wait "$pid" || true
done
rm -f "$here/off.sh" "$here/on.sh"
