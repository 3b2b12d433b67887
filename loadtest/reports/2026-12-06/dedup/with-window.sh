#!/usr/bin/env bash
# with-window.sh WINDOW BINARY: runs ringcast BINARY with DEDUP_WINDOW=WINDOW.
# exec keeps the process id (compare.sh measures the server's CPU by it)
# and the CPU affinity it was started with.
window=$1 binary=$2
shift 2
DEDUP_WINDOW=$window exec "$binary" "$@"
