#!/bin/bash
# $1 label, $2 binary
port=18190
PORT=$port HOST=127.0.0.1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/$1.out "$2" > /tmp/cg/$1.log 2>&1 &
pid=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
/work/before/ringcast-load run --target ringcast --url ws://127.0.0.1:$port/ws --scenario chat --rate 2000 --duration 5s --warmup 1s --json /tmp/cg/$1.json > /tmp/cg/$1.load 2>&1
kill -TERM $pid; wait $pid
python3 - "$1" <<'PY'
import json,sys,re
label=sys.argv[1]
d=json.load(open(f"/tmp/cg/{label}.json"))
s=d["steps"][0]
txt=open(f"/tmp/cg/{label}.out").read()
ir=int(re.search(r"^summary: (\d+)",txt,re.M).group(1)) if re.search(r"^summary: (\d+)",txt,re.M) else int(re.search(r"^totals: (\d+)",txt,re.M).group(1))
print(label, "published", s["published"], "received", s["received"], "Ir", ir, "Ir/event", ir/ max(s["received"],1))
PY
