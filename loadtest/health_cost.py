"""Latency of GET /health on a server holding N topics.

Usage: python3 loadtest/health_cost.py <ringcast binary> <port> <topics>
Starts the binary, creates the topics over one keep-alive connection, then
times 300 sequential GET /health and prints the median and p90.
"""
import http.client, json, os, statistics, subprocess, sys, time

binary, port, topics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--max-topics", str(topics + 10)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
try:
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port); conn.request("GET", "/health"); conn.getresponse().read(); break
        except OSError:
            time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(topics):
        conn.request("POST", "/topics", body=json.dumps({"name": f"t{i}"}), headers={"content-type": "application/json"})
        r = conn.getresponse(); r.read(); assert r.status == 201, r.status
    samples = []
    for _ in range(300):
        t = time.perf_counter(); conn.request("GET", "/health"); body = conn.getresponse().read(); samples.append(time.perf_counter() - t)
    print(f"{os.path.basename(binary)} topics={topics} health median={statistics.median(samples)*1e6:.0f}us p90={sorted(samples)[270]*1e6:.0f}us {body.decode()[:80]}")
finally:
    proc.terminate(); proc.wait()
