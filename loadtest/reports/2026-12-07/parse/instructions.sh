#!/bin/sh
# Instructions per parse_client_frame call, under callgrind (noise-free on a
# shared machine). Usage: instructions.sh <write_path bench executable> [128B|4KiB]
# Build the executable with `cargo bench --bench write_path --no-run`, and copy
# it aside before changing the code.
set -eu
exe=$1
size=${2:-128B}
out=$(mktemp)
valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect='*parse_client_frame*' \
    "$exe" --bench "parse_publish/$size" --profile-time 1 >/dev/null 2>&1
# The calls from criterion's timed loop (the 2 calls from the bench's setup
# check are left out) and the instructions they took, inclusive.
callgrind_annotate --tree=caller "$out" 2>/dev/null |
    awk '/< .*Bencher<M>::iter \(/ {
        gsub(",", "", $1); match($0, /\(([0-9,]+)x\)/);
        calls = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", calls);
        printf "%s instructions / %s parses = %.0f per parse\n", $1, calls, $1 / calls; exit }'
callgrind_annotate "$out" 2>/dev/null | sed -n '/file:function/,$p' | head -16
rm -f "$out"
