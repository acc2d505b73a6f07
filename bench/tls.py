"""TLS termination, side by side: kgw, nginx, HAProxy and Envoy each terminate HTTPS with the
same ECDSA P-256 certificate and forward plain HTTP to the same backend. Two measures:

- keep-alive: wrk over 32 TLS connections that stay open (the handshake is paid once), so the
  figure is the per-request cost of TLS records on top of HTTP;
- handshakes: wrk with `Connection: close`, so every request is a new TCP connection and a full
  TLS handshake (wrk opens each with a fresh OpenSSL session: no resumption).

Every proxy runs on CPU 0 as in the plain rounds; the same rotated rounds and medians.
"""
import statistics
import subprocess
from pathlib import Path

import bench


def make_certificate(work):
    """A self-signed ECDSA P-256 certificate for bench.example.com; returns (cert, key, bundle)."""
    d = Path(work) / "tls-cert"
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "30", "-subj", "/CN=bench.example.com", "-addext",
                    "subjectAltName=DNS:bench.example.com", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    bundle = d / "bundle.pem"  # HAProxy wants the certificate and key in one file
    bundle.write_text(cert.read_text() + key.read_text())
    return cert, key, bundle


def indent(text, by):
    return "".join(f"{by}{line}\n" for line in text.splitlines())


def start_kgw(work, port, backend_port, cert, key, bundle, binary=None, h2=False):
    """kgw offers h2 by ALPN on every HTTPS listener: `h2` changes nothing."""
    d = Path(work) / f"kgw-tls-{port}"
    d.mkdir(parents=True, exist_ok=True)
    manifest = bench.kgw_manifest(port, "127.0.0.1", backend_port).replace(
        "listeners: [{name: http, protocol: HTTP, port: %d}]" % port,
        "listeners: [{name: https, protocol: HTTPS, port: %d, tls: {certificateRefs: [{name: bench-cert}]}}]" % port)
    manifest += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: bench-cert, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(Path(cert).read_text(), '    ')}  tls.key: |
{indent(Path(key).read_text(), '    ')}"""
    (d / "gw.yaml").write_text(manifest)
    admin = bench.free_port()
    p = bench.Proc([binary or bench.KGW, "run", "-f", d / "gw.yaml", "--state-dir", d / "state", "--admin-address",
                    f"127.0.0.1:{admin}", "--access-log", "off"], bench.PROXY_CPU, d / "kgw.log")
    bench.wait_port(port)
    return p


def start_nginx(work, port, backend_port, cert, key, bundle, h2=False):
    d = Path(work) / f"nginx-tls-{port}"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 19500;
error_log {d}/logs/error.log; pid {d}/nginx.pid;
events {{ worker_connections 20000; }}
http {{ access_log off; {bench.NGINX_TEMPS.format(d=d)}
  keepalive_timeout 3600s; keepalive_requests 10000000;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
  upstream be {{ server 127.0.0.1:{backend_port}; keepalive 1024; keepalive_timeout 3600s; keepalive_requests 10000000; }}
  server {{ listen 127.0.0.1:{port} ssl{" http2" if h2 else ""} reuseport backlog=4096;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    p = bench.Proc(["nginx", "-p", d, "-c", conf], bench.PROXY_CPU, d / "stdout.log")
    bench.wait_port(port)
    return p


def start_haproxy(work, port, backend_port, cert, key, bundle, h2=False):
    d = Path(work) / f"haproxy-tls-{port}"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "haproxy.cfg"
    conf.write_text(f"""global
    nbthread 1
    maxconn 9900
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 3600s
frontend fe
    bind 127.0.0.1:{port} ssl crt {bundle}{" alpn h2,http/1.1" if h2 else ""}
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:{backend_port} pool-max-conn 2000 pool-purge-delay 3600s
""")
    p = bench.Proc(["haproxy", "-f", conf, "-db"], bench.PROXY_CPU, d / "haproxy.log")
    bench.wait_port(port)
    return p


def start_envoy(work, port, backend_port, cert, key, bundle, h2=False):
    d = Path(work) / f"envoy-tls-{port}"
    d.mkdir(parents=True, exist_ok=True)
    cluster = "kube_bench_be_80"
    # Without ALPN Envoy's TLS listener speaks HTTP/1.1 only; with h2 offered, its codec (AUTO) follows ALPN.
    alpn = "            alpn_protocols: [h2, http/1.1]\n" if h2 else ""
    conf = d / "envoy.yaml"
    conf.write_text(f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {bench.free_port()}}}}}
static_resources:
  listeners:
  - name: https
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
{alpn}            tls_certificates: [{{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: https
          route_config:
            virtual_hosts:
            - name: be
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {cluster}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: {cluster}
    connect_timeout: 5s
    type: STATIC
    circuit_breakers: {{thresholds: [{{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}]}}
    load_assignment:
      cluster_name: {cluster}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend_port}}}}}}}}}]}}]
""")
    p = bench.Proc([bench.ENVOY, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
                   bench.PROXY_CPU, d / "envoy.log")
    bench.wait_port(port, timeout=30)
    return p


STARTERS = {"kgw": start_kgw, "nginx": start_nginx, "haproxy": start_haproxy, "envoy": start_envoy}


def wrk_tls(port, seconds, close=False, connections=32):
    """wrk over HTTPS; with `close`, a new connection (and handshake) per request."""
    return bench.wrk(port, seconds, connections, scheme="https",
                     headers=["Connection: close"] if close else [])


def measure(args, work, backend_port, results, before=None):
    """Fills results[name]['tls'] = {keepalive: {...}, handshake: {...}} for every proxy."""
    cert, key, bundle = make_certificate(work)
    starters = dict(STARTERS)
    if before:
        starters["kgw before"] = lambda *a: start_kgw(*a, binary=before)
    names = list(starters)
    for mode, close in (("keepalive", False), ("handshake", True)):
        rounds = {name: [] for name in names}
        for round_index in range(args.rounds):
            for name in bench.rotated(names, round_index):
                port = bench.free_port()
                proxy = starters[name](work, port, backend_port, cert, key, bundle)
                try:
                    wrk_tls(port, 2, close)  # warm up: upstream pool filled
                    user0, system0 = proxy.cpu_seconds()
                    rps, total, errors = wrk_tls(port, args.seconds, close)
                    user1, system1 = proxy.cpu_seconds()
                finally:
                    proxy.stop()
                cpu = (user1 - user0) + (system1 - system0)
                rounds[name].append(dict(rps=rps, errors=errors, cpu_us_per_rq=cpu / total * 1e6))
                print(f"tls {mode} round {round_index + 1} {name}: {rps:.0f} req/s, "
                      f"{cpu / total * 1e6:.1f} us CPU/req, {errors} errors", flush=True)
        for name in names:
            r = results.setdefault(name, {}).setdefault("tls", {}).setdefault(mode, {})
            for k in ("rps", "cpu_us_per_rq"):
                values = [one[k] for one in rounds[name]]
                r[k] = statistics.median(values)
                r[k + "_range"] = (min(values), max(values))
            r["errors"] = sum(one["errors"] for one in rounds[name])


def report(results, args):
    """The TLS section of BENCHMARKS.md."""
    names = [n for n in list(STARTERS) + ["kgw before"] if "tls" in results.get(n, {})]
    peers = [n for n in ("nginx", "haproxy", "envoy") if n in names]
    lines = ["", "## TLS termination (ECDSA P-256, TLS 1.3, to a plain HTTP backend; median of "
             f"{args.rounds} rounds, {args.seconds} s each)", "",
             "Keep-alive: 32 TLS connections held open. Handshakes: `Connection: close` on every request, so each "
             "is a new TCP connection and a full handshake (no session resumption: nginx and HAProxy have tickets "
             "and caches off, kgw and Envoy issue none that wrk reuses). Ratios against the best of nginx, HAProxy "
             "and Envoy.", "",
             "| proxy | keep-alive req/s | µs CPU per request | handshakes/s | µs CPU per handshake | req/s vs best | "
             "handshakes/s vs best |", "|---|---:|---:|---:|---:|---:|---:|"]

    def best(mode, key, higher):
        values = [results[p]["tls"][mode][key] for p in peers]
        return (max(values) if higher else min(values)) if values else None

    for n in names:
        k, h = results[n]["tls"]["keepalive"], results[n]["tls"]["handshake"]
        bk, bh = best("keepalive", "rps", True), best("handshake", "rps", True)
        lines.append(f"| {n} | {k['rps']:.0f} | {k['cpu_us_per_rq']:.2f} | {h['rps']:.0f} | {h['cpu_us_per_rq']:.1f} "
                     f"| {k['rps'] / bk:.2f} | {h['rps'] / bh:.2f} |" if bk and bh else
                     f"| {n} | {k['rps']:.0f} | {k['cpu_us_per_rq']:.2f} | {h['rps']:.0f} | {h['cpu_us_per_rq']:.1f} | | |")
    errors = {n: results[n]["tls"]["keepalive"]["errors"] + results[n]["tls"]["handshake"]["errors"] for n in names}
    lines += ["", "Errors over all TLS rounds: " + ", ".join(f"{n} {e}" for n, e in errors.items()) + "."]
    return lines
