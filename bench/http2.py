"""HTTP/2 over TLS, side by side: kgw, nginx (`listen ... ssl http2`), HAProxy (`alpn h2,http/1.1`)
and Envoy (ALPN h2, codec AUTO) each terminate TLS with the same ECDSA P-256 certificate, speak
HTTP/2 to the client and forward HTTP/1.1 to the same backend (the proxies are bench/tls.py's,
started with h2 on).

The load is h2load (Debian's nghttp2-client): 16 connections, 32 concurrent streams on each
(512 requests in flight). Many streams per connection is what HTTP/2 clients do (a browser opens
one connection per origin, a gRPC channel one per backend) and it puts the cost where HTTP/2
differs from HTTP/1.1: HPACK, framing, stream bookkeeping and flow control per request, with the
TLS handshakes paid once. 32 streams stays under every proxy's default stream limit (HAProxy
100, nginx 128, kgw 100), so no proxy queues or refuses streams.

Every proxy runs on CPU 0 and h2load on CPU 1 (with the backend), as in the other rounds; the
same rotated rounds and medians.
"""
import os
import re
import statistics
import subprocess

import bench
import tls

CONNECTIONS = 16
STREAMS = 32


def h2load(port, seconds):
    """h2load over TLS (ALPN h2) on the load CPU; returns (requests/s, succeeded, failed)."""
    out = subprocess.run(["taskset", "-c", bench.LOAD_CPU, "h2load", "-c", str(CONNECTIONS), "-m", str(STREAMS),
                          "-t", "1", "-D", str(seconds), f"https://127.0.0.1:{port}/"],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "Application protocol: h2" not in text:
        raise RuntimeError(f"h2load did not speak HTTP/2 to port {port}:\n{text}")
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text).group(1))
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     text)
    return rps, int(done.group(1)), int(done.group(2)) + int(done.group(3))


def measure(args, work, backend_port, results, before=None):
    """Fills results[name]['h2'] = {rps, cpu_us_per_rq, errors, ...} for every proxy."""
    cert, key, bundle = tls.make_certificate(work)
    starters = dict(tls.STARTERS)
    if before:
        starters["kgw before"] = lambda *a, **kw: tls.start_kgw(*a, binary=before, **kw)
    names = list(starters)
    rounds = {name: [] for name in names}
    load_before = os.getloadavg()[0]
    for round_index in range(args.rounds):
        for name in bench.rotated(names, round_index):
            port = bench.free_port()
            proxy = starters[name](work, port, backend_port, cert, key, bundle, h2=True)
            try:
                h2load(port, 2)  # warm up: upstream pool filled
                user0, system0 = proxy.cpu_seconds()
                rps, succeeded, errors = h2load(port, args.seconds)
                user1, system1 = proxy.cpu_seconds()
            finally:
                proxy.stop()
            cpu = (user1 - user0) + (system1 - system0)
            per = cpu / max(succeeded, 1) * 1e6
            rounds[name].append(dict(rps=rps, errors=errors, cpu_us_per_rq=per))
            print(f"h2 round {round_index + 1} {name}: {rps:.0f} req/s, {per:.1f} us CPU/req, {errors} errors",
                  flush=True)
    for name in names:
        r = results.setdefault(name, {}).setdefault("h2", {})
        for k in ("rps", "cpu_us_per_rq"):
            values = [one[k] for one in rounds[name]]
            r[k] = statistics.median(values)
            r[k + "_range"] = (min(values), max(values))
        r["errors"] = sum(one["errors"] for one in rounds[name])
    # Other work on the machine skews requests/s (wall clock) far more than CPU per request.
    results["h2_load_average"] = (load_before, os.getloadavg()[0])


SECTION = "## HTTP/2 over TLS"


def report(results, args):
    """The HTTP/2 section of BENCHMARKS.md."""
    names = [n for n in list(tls.STARTERS) + ["kgw before"] if "h2" in results.get(n, {})]
    peers = [n for n in ("nginx", "haproxy", "envoy") if n in names]
    best_rps = max((results[p]["h2"]["rps"] for p in peers), default=None)
    best_cpu = min((results[p]["h2"]["cpu_us_per_rq"] for p in peers), default=None)
    lines = ["", f"{SECTION} (h2load, {CONNECTIONS} connections x {STREAMS} streams, to a plain HTTP/1.1 backend; "
             f"median of {args.rounds} rounds, {args.seconds} s each)", "",
             f"`h2load -c {CONNECTIONS} -m {STREAMS} -t 1 -D {args.seconds}` against each proxy's "
             "HTTPS listener (ECDSA P-256, TLS 1.3): 512 requests in flight on 16 connections, so the per-request "
             "HTTP/2 work (HPACK, frames, streams, flow control) is what is measured, the handshakes are paid once. "
             "nginx `listen ... ssl http2`, HAProxy `alpn h2,http/1.1`, Envoy `alpn_protocols: [h2, http/1.1]`; "
             "each forwards HTTP/1.1 over pooled keep-alive connections. Ratios against the best of nginx, HAProxy "
             "and Envoy. Run alone: `bash bench/run --only h2`.", "",
             "| proxy | requests/s | range | µs CPU per request | range | req/s vs best | CPU vs best |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        h = results[n]["h2"]
        lo, hi = h["rps_range"]
        clo, chi = h["cpu_us_per_rq_range"]
        lines.append(f"| {n} | {h['rps']:.0f} | {lo:.0f}-{hi:.0f} | {h['cpu_us_per_rq']:.2f} | {clo:.2f}-{chi:.2f} | "
                     + (f"{h['rps'] / best_rps:.2f}" if best_rps else "") + " | "
                     + (f"{h['cpu_us_per_rq'] / best_cpu:.2f}" if best_cpu else "") + " |")
    lines += ["", "Errors (failed or errored requests) over all HTTP/2 rounds: "
              + ", ".join(f"{n} {results[n]['h2']['errors']}" for n in names) + "."]
    if "h2_load_average" in results:
        before, after = results["h2_load_average"]
        lines += ["", f"The machine's 1-minute load average was {before:.1f} before these rounds and {after:.1f} after "
                  "(on 2 CPUs; above 2, other work shared the proxy's CPU and requests/s fall for every proxy by chance "
                  "of timing: CPU per request is the steadier figure)."]
    return lines


def update_report(path, results, args):
    """A run of the HTTP/2 rounds alone (`--only h2`) replaces this section of BENCHMARKS.md
    and leaves the others as the last full run wrote them."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join(report(results, args)).lstrip("\n") + "\n\n"
    start = text.find(SECTION)
    if start < 0:  # first time: before the machine and versions
        anchor = text.find("\n## Machine and versions")
        start = end = anchor + 1 if anchor >= 0 else len(text)
    else:
        following = text.find("\n## ", start + 1)
        end = following + 1 if following >= 0 else len(text)
    path.write_text(text[:start] + section + text[end:])
    print(f"updated {path} ({SECTION})")
