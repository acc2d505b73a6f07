#!/usr/bin/env python3
"""kgw with its access log (to a file) against kgw without, alternating, round by round.

This VM puts each throughput round in a fast or a slow regime (about 11.5 or 14.3 µs of CPU per
request, for every proxy alike), so bench.py's medians can compare a slow round of one path with
a fast round of another. Here the two paths run back to back in alternating order, and the ratio
is taken round by round. Run after `bash bench/run` has built kgw: `python3 bench/access_log_ab.py`.
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    bench.raise_nofile()
    work = tempfile.mkdtemp(prefix="kgw-ab-")
    backend_port = bench.free_port()
    backend = bench.nginx_backend(work, backend_port)
    results = {"off": [], "log": []}
    try:
        with bench.ProxyCpuCleared():
            for i in range(args.rounds):
                for name in (["off", "log"] if i % 2 == 0 else ["log", "off"]):
                    port = bench.free_port()
                    proxy = bench.start_kgw(work, port, "127.0.0.1", backend_port, log=(name == "log"))
                    try:
                        bench.wrk(port, 2)
                        user0, system0 = proxy.cpu_seconds()
                        rps, total, _ = bench.wrk(port, args.seconds)
                        user1, system1 = proxy.cpu_seconds()
                    finally:
                        proxy.stop()
                    cpu = (user1 - user0 + system1 - system0) / total * 1e6
                    user = (user1 - user0) / total * 1e6
                    results[name].append((rps, cpu, user))
                    print(f"round {i + 1} {name}: {rps:.0f} req/s, {cpu:.2f} us CPU/req, user {user:.2f}", flush=True)
    finally:
        backend.stop()
    for name, rows in results.items():
        print(f"{name}: median {statistics.median(r[0] for r in rows):.0f} req/s, "
              f"{statistics.median(r[1] for r in rows):.2f} us CPU/req, user {statistics.median(r[2] for r in rows):.2f}")
    ratios = [log[1] / off[1] for off, log in zip(results["off"], results["log"])]
    print("CPU log/off per round:", " ".join(f"{r:.2f}" for r in ratios), f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
