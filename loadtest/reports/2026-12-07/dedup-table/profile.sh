#!/bin/bash
# Where the server's time goes on the `ingress` row: perf (cpu-clock, the
# one event these machines have) samples the server for 4 s of a 10 s run.
# Usage, from the project root after `cargo build --release --workspace`:
#   profile.sh SERVER_BINARY OUT.data [extra ringcast-load args]
# then: perf report -i OUT.data --no-children --sort sym
#       perf annotate -i OUT.data --stdio -s 'ringcast::broker::Broker::append'
set -u
server_binary=$1
out=$2
shift 2
RUST_LOG=warn PORT=18080 HOST=127.0.0.1 taskset -c 0 "$server_binary" >/dev/null 2>&1 &
server=$!
sleep 1
taskset -c 1 target/release/ringcast-load run --target ringcast --url ws://127.0.0.1:18080/ws \
    --scenario ingress --duration 10s --warmup 2s --server-pid $server "$@" >/dev/null 2>&1 &
load=$!
sleep 5
perf record -e cpu-clock -F 4999 -p $server -o "$out" -- sleep 4 >/dev/null 2>&1
wait $load
kill $server
wait $server 2>/dev/null
