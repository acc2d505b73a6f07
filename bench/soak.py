#!/usr/bin/env python3
"""A soak of kgw under mixed load, with its backend restarted twice. Not part of the tests.

For `--duration` seconds (600 by default) through one kgw on loopback, at once:
- keep-alive clients (small GETs on persistent connections) and fresh-connection clients;
- 10 MB downloads and 10 MB uploads, checked byte for byte in length;
- slow clients: an upload trickled over several seconds, a download read at 1 MB/s;
- 1,000 idle keep-alive connections, opened at the start, each asked once more at the end;
- `kgw apply` every second (a policy whose keepalive time changes, and now and then a Service
  that comes and goes);
- the backend (nginx) stopped and started again at one third and two thirds of the run.

A request fails when it gets no answer, a status other than expected, or a body of the wrong
length. Failures of requests in flight while the backend is down (from its stop to one second
after it is back) are the ones the restarts must cause: they are counted apart. The soak passes
with no other failure and kgw's RSS at the end within 10% of its RSS after warm-up.

Run it with `bash bench/soak` (builds kgw in release mode first).
"""
import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import KGW, NGINX_TEMPS, Proc, free_port, kgw_manifest, raise_nofile, wait_port  # noqa: E402

BIG = 10 * 1024 * 1024
ALL_CPUS = "0-{}".format(max(0, len(__import__("os").sched_getaffinity(0)) - 1))


class Ledger:
    """Every request's start, end and verdict, and the backend's outages."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (kind, start, end, error or None)
        self.outages = []  # (stopped, back)

    def record(self, kind, start, error):
        with self.lock:
            self.requests.append((kind, start, time.monotonic(), error))

    def excused(self, start, end):
        return any(start <= back + 1.0 and end >= stopped for stopped, back in self.outages)


def nginx_conf(d, port):
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "www").mkdir(exist_ok=True)
    (d / "up").mkdir(exist_ok=True)
    big = d / "www" / "big"
    if not big.exists():
        big.write_bytes(random.randbytes(BIG))
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 19500;
error_log {d}/logs/error.log; pid {d}/nginx.pid;
events {{ worker_connections 20000; }}
http {{ access_log off; {NGINX_TEMPS.format(d=d)}
  keepalive_timeout 75s; keepalive_requests 10000000; client_max_body_size 20m;
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /small {{ return 200 "ok\\n"; }}
    location = /big {{ alias {big}; }}
    location /up/ {{ root {d}; dav_methods PUT; create_full_put_path on; }} }} }}
""")
    return conf


def manifest(port, backend_port, keepalive_time=30, extra_service=False):
    """The bench's Gateway, route, Service and keepalive policy, and now and then a Service that
    comes and goes."""
    text = kgw_manifest(port, "127.0.0.1", backend_port, keepalive=(keepalive_time, 5, 3))
    if extra_service:
        text += """---
apiVersion: v1
kind: Service
metadata: {name: comes-and-goes, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
"""
    return text


class Soak:
    def __init__(self, args, work):
        self.args = args
        self.work = Path(work)
        self.port = free_port()
        self.backend_port = free_port()
        self.admin = free_port()
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.rss = []  # (seconds since start, KiB)

    # ------------------------------------------------------------ processes

    def start_backend(self):
        d = self.work / "backend"
        conf = nginx_conf(d, self.backend_port)
        self.backend = Proc(["nginx", "-p", d, "-c", conf], ALL_CPUS, d / "stdout.log")
        wait_port(self.backend_port)

    def start_kgw(self):
        d = self.work / "kgw"
        d.mkdir(parents=True, exist_ok=True)
        (d / "gw.yaml").write_text(manifest(self.port, self.backend_port))
        self.kgw = Proc([self.args.kgw, "run", "-f", d / "gw.yaml", "--state-dir", d / "state",
                         "--admin-address", f"127.0.0.1:{self.admin}",
                         "--access-log", d / "access.log"], ALL_CPUS, d / "kgw.log")
        wait_port(self.port)

    def kgw_apply(self, text):
        r = subprocess.run([self.args.kgw, "apply", "-f", "-", "--server", f"127.0.0.1:{self.admin}"],
                           input=text, capture_output=True, text=True, timeout=30)
        return r.returncode == 0, r.stderr.strip()

    # ------------------------------------------------------------ clients

    def timed(self, kind, fn):
        start = time.monotonic()
        try:
            fn()
            self.ledger.record(kind, start, None)
        except Exception as e:  # every failure is recorded, none ends the soak
            self.ledger.record(kind, start, f"{type(e).__name__}: {e}")

    def expect(self, resp, status, length=None):
        body = resp.read()
        if resp.status != status:
            raise RuntimeError(f"status {resp.status}, body {body[:120]!r}")
        if length is not None and len(body) != length:
            raise RuntimeError(f"body of {len(body)} bytes, expected {length}")

    def keepalive_client(self):
        conn = None
        while not self.stop.is_set():
            def one():
                nonlocal conn
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.request("GET", "/small")
                    self.expect(conn.getresponse(), 200, 3)
                except Exception:
                    conn.close()
                    conn = None
                    raise
            self.timed("keep-alive GET", one)
            time.sleep(0.005)

    def fresh_client(self):
        while not self.stop.is_set():
            def one():
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.request("GET", "/small", headers={"Connection": "close"})
                    self.expect(conn.getresponse(), 200, 3)
                finally:
                    conn.close()
            self.timed("new-connection GET", one)
            time.sleep(0.01)

    def big_client(self):
        payload = random.randbytes(BIG)
        n = 0
        while not self.stop.is_set():
            def download():
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                try:
                    conn.request("GET", "/big")
                    self.expect(conn.getresponse(), 200, BIG)
                finally:
                    conn.close()

            def upload():
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                try:
                    conn.request("PUT", f"/up/{n % 4}", body=payload)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status not in (201, 204):
                        raise RuntimeError(f"status {resp.status}")
                finally:
                    conn.close()
            self.timed("10 MB GET", download)
            self.timed("10 MB PUT", upload)
            n += 1
            self.stop.wait(1.0)

    def slow_uploader(self):
        """20 KB trickled in 2 KB pieces every 0.5 s: 5 s per request."""
        while not self.stop.is_set():
            def one():
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    size = 20 * 1024
                    s.sendall(f"PUT /up/slow HTTP/1.1\r\nHost: soak\r\nContent-Length: {size}\r\n"
                              "Connection: close\r\n\r\n".encode())
                    for _ in range(10):
                        time.sleep(0.5)
                        s.sendall(b"x" * 2048)
                    answer = b""
                    while b"\r\n" not in answer:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
                    status = answer.split(b" ", 2)[1] if answer.count(b" ") >= 2 else answer
                    if status not in (b"201", b"204"):
                        raise RuntimeError(f"answer {answer[:80]!r}")
            self.timed("slow upload", one)
            time.sleep(0.05)

    def slow_reader(self):
        """The 10 MB file read at 1 MB/s: 10 s per request."""
        while not self.stop.is_set():
            def one():
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    s.sendall(b"GET /big HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                    got = b""
                    while b"\r\n\r\n" not in got:
                        chunk = s.recv(65536)
                        if not chunk:
                            raise RuntimeError("closed before the head")
                        got += chunk
                    head, body = got.split(b"\r\n\r\n", 1)
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"head {head[:80]!r}")
                    total = len(body)
                    while True:
                        t = time.monotonic()
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        total += len(chunk)
                        time.sleep(max(0.0, len(chunk) / 1_000_000 - (time.monotonic() - t)))
                    if total != BIG:
                        raise RuntimeError(f"body of {total} bytes")
            self.timed("slow download", one)
            time.sleep(0.05)

    def applier(self):
        n = 0
        while not self.stop.wait(1.0):
            n += 1
            text = manifest(self.port, self.backend_port, 30 + n % 2, extra_service=n % 10 < 5)
            start = time.monotonic()
            ok, err = self.kgw_apply(text)
            self.ledger.record("apply", start, None if ok else err)

    def sampler(self, started):
        while not self.stop.wait(5.0):
            self.rss.append((time.monotonic() - started, self.kgw.rss_kib()))

    # ------------------------------------------------------------ idle connections

    def open_idle(self, count):
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\n\r\n")
            socks.append(s)
        for s in socks:
            read_answer(s)
        return socks

    def ask_idle_again(self, socks):
        failed = 0
        for s in socks:
            try:
                s.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\n\r\n")
                if not read_answer(s).startswith(b"HTTP/1.1 200"):
                    failed += 1
            except OSError:
                failed += 1
            s.close()
        return failed

    # ------------------------------------------------------------ the run

    def restart_backend(self):
        stopped = time.monotonic()
        self.backend.stop()
        time.sleep(1.0)
        self.start_backend()
        self.ledger.outages.append((stopped, time.monotonic()))

    def run(self):
        a = self.args
        self.start_backend()
        self.start_kgw()
        idle = self.open_idle(a.idle)
        started = time.monotonic()
        workers = ([self.keepalive_client] * 4 + [self.fresh_client] * 2 + [self.big_client]
                   + [self.slow_uploader, self.slow_reader, self.applier])
        threads = [threading.Thread(target=w, daemon=True) for w in workers]
        threads.append(threading.Thread(target=self.sampler, args=(started,), daemon=True))
        for t in threads:
            t.start()
        for at in (a.duration / 3, 2 * a.duration / 3):
            time.sleep(max(0.0, started + at - time.monotonic()))
            print(f"{time.monotonic() - started:6.0f} s: restarting the backend", flush=True)
            self.restart_backend()
        time.sleep(max(0.0, started + a.duration - time.monotonic()))
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        idle_failed = self.ask_idle_again(idle)
        end_rss = self.kgw.rss_kib()
        self.kgw.stop()
        self.backend.stop()
        return self.report(idle_failed, end_rss)

    def report(self, idle_failed, end_rss):
        a = self.args
        kinds = {}
        unexcused = []
        for kind, start, end, error in self.ledger.requests:
            k = kinds.setdefault(kind, {"requests": 0, "failed": 0, "failed_in_restarts": 0})
            k["requests"] += 1
            if error is None:
                continue
            if kind != "apply" and self.ledger.excused(start, end):
                k["failed_in_restarts"] += 1
                k.setdefault("first_failure_in_restarts", error)
            else:
                k["failed"] += 1
                unexcused.append(f"{kind}: {error}")
        warm = next((kib for t, kib in self.rss if t >= a.warmup), None)
        growth = (end_rss / warm - 1.0) if warm else None
        result = {
            "duration_s": a.duration,
            "idle_connections": a.idle,
            "idle_failed_at_end": idle_failed,
            "by_kind": kinds,
            "rss_after_warmup_kib": warm,
            "rss_end_kib": end_rss,
            "rss_growth": growth,
            "rss_samples": self.rss,
            "first_failures": unexcused[:10],
        }
        print(f"{'kind':<20} {'requests':>9} {'failed':>7} {'failed in restarts':>19}")
        for kind, k in sorted(kinds.items()):
            print(f"{kind:<20} {k['requests']:>9} {k['failed']:>7} {k['failed_in_restarts']:>19}")
        print(f"idle connections asked again at the end: {a.idle}, failed {idle_failed}")
        if warm:
            print(f"kgw RSS: {warm / 1024:.1f} MB after {a.warmup} s, {end_rss / 1024:.1f} MB at the end "
                  f"({growth * 100:+.1f}%)")
        for f in unexcused[:10]:
            print(f"  failure: {f}")
        ok = not unexcused and idle_failed == 0 and growth is not None and growth <= 0.10
        print("soak: PASS" if ok else "soak: FAIL", flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        return ok


def read_answer(s):
    """Reads one small answer with a Content-Length from a keep-alive socket."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed")
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed mid-body")
        body += chunk
    return head


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--warmup", type=float, default=60.0, help="RSS after this many seconds is the baseline")
    p.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections held open")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--kgw", default=str(KGW), help="the kgw binary (default: the release build)")
    args = p.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="kgw-soak-") as work:
        sys.exit(0 if Soak(args, work).run() else 1)


if __name__ == "__main__":
    main()
