#!/usr/bin/env python3
"""The Gateway API conformance echo backend (echo-basic), emulated: one asyncio process serves
every backend "pod" on its own loopback address.

Each pod listens on :3000 (HTTP/1.1, WebSocket on /ws), :3001 (cleartext HTTP/2: prior knowledge
or `Upgrade: h2c`) and, when it has a certificate, :8443 (TLS, ALPN h2 or http/1.1). Answers as
echo-basic does (see the corpus' echo-basic.md): /health, /status/NNN, /ws, and the JSON echo of
every other request, with `delay` and `X-Echo-Set-Header`. Every echoed request is logged, as
echo-basic prints it, to <log-dir>/<namespace>_<pod>.log with the time first: the mirror checks
read these files as the suite reads pod logs.

Usage: echo.py --pods PODS.json --log-dir DIR
PODS.json: [{"name": pod, "namespace": ns, "ip": "127.0.20.1", "cert": PEM path?, "key": PEM path?}]
Prints "ready" on stdout once every listener is bound.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import ssl
import sys
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions

HTTP_PORT = 3000
H2C_PORT = 3001
HTTPS_PORT = 8443
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STATUS_RE = re.compile(r"^/status/(\d\d\d)$")
TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REASONS = {
    200: "OK", 101: "Switching Protocols", 204: "No Content", 400: "Bad Request",
    404: "Not Found", 500: "Internal Server Error",
}


def canonical(name):
    """Go's textproto.CanonicalMIMEHeaderKey: X-Foo-Bar; names with non-token bytes kept as is."""
    if not TOKEN_RE.match(name):
        return name
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def go_duration(text):
    """Go's time.ParseDuration for the `delay` parameter; None when it does not parse."""
    if text in ("0", "+0", "-0"):
        return 0.0
    m = re.fullmatch(r"([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+", text)
    if not m:
        return None
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text))
    return -total if m.group(1) == "-" else total


class Pod:
    def __init__(self, spec, log_dir):
        self.name = spec["name"]
        self.namespace = spec["namespace"]
        self.ip = spec["ip"]
        self.cert = spec.get("cert")
        self.key = spec.get("key")
        self.log = open(os.path.join(log_dir, f"{self.namespace}_{self.name}.log"), "a", buffering=1)

    def log_echo(self, uri, remote):
        self.log.write(f"{time.time():.6f} Echoing back request made to {uri} to client ({remote})\n")


class Request:
    def __init__(self, method, uri, proto, headers, body, remote, tls=None):
        self.method = method
        self.uri = uri
        self.proto = proto
        self.headers = headers  # [(canonical name, value)] in arrival order, Host excluded
        self.host = ""
        self.body = body
        self.remote = remote
        self.tls = tls

    def values(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


def handle(pod, req):
    """The echo-basic handler: ((status, [(name, value)], body bytes), delay seconds or None)."""
    path = urllib.parse.urlsplit(req.uri).path if not req.uri.startswith("/") else req.uri.split("?", 1)[0]
    while "//" in path:
        path = path.replace("//", "/")
    if path == "/health":
        return (200, [("Content-Type", "text/plain; charset=utf-8")], b"OK"), None
    if path.startswith("/status/"):
        m = STATUS_RE.match(req.uri)
        if not m:
            return (400, [], b""), None
        return (int(m.group(1)), [], b""), None
    pod.log_echo(req.uri, req.remote)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.uri).query, keep_blank_values=True)
    content_type = ",".join(req.values("content-type"))
    if content_type.startswith("application/x-www-form-urlencoded") and req.method in ("POST", "PUT", "PATCH"):
        form = urllib.parse.parse_qs(req.body.decode("latin-1"), keep_blank_values=True)
        for k, v in form.items():
            query.setdefault(k, [])[:0] = v
    delay = None
    if "delay" in query:
        delay = go_duration(query["delay"][0])
        if delay is None:
            msg = json.dumps({"message": f'time: invalid duration "{query["delay"][0]}"'}).encode()
            return (500, [("Content-Type", "application/json")], msg), None
    out_headers = []
    for raw in req.values("x-echo-set-header"):
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, value = item.partition(":")
            name, value = name.strip(), value.strip()
            for i, (k, v) in enumerate(out_headers):
                if k == name:
                    out_headers[i] = (k, v + "," + value)
                    break
            else:
                out_headers.append((name, value))
    headers = {}
    for k, v in req.headers:
        headers.setdefault(k, []).append(v)
    echo = {
        "path": req.uri,
        "host": req.host,
        "method": req.method,
        "proto": req.proto,
        "headers": headers,
        "namespace": pod.namespace,
        "ingress": "",
        "service": "",
        "pod": pod.name,
        "httpPort": str(HTTP_PORT),
    }
    if req.tls:
        echo["tls"] = req.tls
    body = json.dumps(echo, indent=" ").encode()
    out_headers += [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")]
    return (200, out_headers, body), delay


def tls_info(writer):
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    info = {"version": sslobj.version(), "serverName": getattr(sslobj, "kgw_sni", "") or "",
            "cipherSuite": (sslobj.cipher() or ("",))[0]}
    alpn = sslobj.selected_alpn_protocol()
    if alpn:
        info["negotiatedProtocol"] = alpn
    peer = sslobj.getpeercert(binary_form=True)
    if peer:
        info["peerCertificates"] = [ssl.DER_cert_to_PEM_cert(peer)]
    return info


async def read_head(reader):
    """Reads a request head; None at a clean EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, uri, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return method, uri, version, headers


async def read_body(reader, headers):
    te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding").lower()
    if "chunked" in te:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = [v for k, v in headers if k.lower() == "content-length"]
    if length:
        return await reader.readexactly(int(length[0]))
    return b""


def h1_response(status, headers, body, head_only=False, close=False):
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    names = {k.lower() for k, _ in headers}
    lines += [f"{k}: {v}" for k, v in headers]
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def to_request(method, uri, version, headers, body, remote, tls):
    kept = []
    host = ""
    for k, v in headers:
        if k.lower() == "host":
            host = host or v
            continue
        if k.lower() == "transfer-encoding":
            continue
        kept.append((canonical(k), v))
    req = Request(method, uri, version, kept, body, remote, tls)
    req.host = host
    return req


async def serve_h1(pod, reader, writer, first=b"", h2c_port=False):
    remote = "%s:%d" % writer.get_extra_info("peername")[:2]
    tls = tls_info(writer)
    if first:
        reader = prepend(reader, first)
    while True:
        head = await read_head(reader)
        if head is None:
            return
        method, uri, version, headers = head
        body = await read_body(reader, headers)
        lower = {k.lower(): v for k, v in headers}
        if h2c_port:
            if "h2c" in lower.get("upgrade", "").lower():
                await upgrade_h2c(pod, reader, writer, method, uri, headers, body, remote)
                return
            writer.write(h1_response(400, [("Content-Type", "text/plain; charset=utf-8")], b"Expected h2c request"))
            await writer.drain()
            continue
        path = uri.split("?", 1)[0]
        while "//" in path:
            path = path.replace("//", "/")
        if path == "/ws" and "websocket" in lower.get("upgrade", "").lower():
            await websocket(reader, writer, lower)
            return
        req = to_request(method, uri, version, headers, body, remote, tls)
        (status, out, payload), delay = handle(pod, req)
        if delay:
            await asyncio.sleep(delay)
        close = lower.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        writer.write(h1_response(status, out, payload, head_only=method == "HEAD", close=close))
        await writer.drain()
        if close:
            return


class prepend:
    """A StreamReader view that yields `first` before the rest of the stream."""

    def __init__(self, reader, first):
        self.reader = reader
        self.buf = first

    async def readuntil(self, sep):
        while sep not in self.buf:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(self.buf, None)
            self.buf += chunk
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    async def readexactly(self, n):
        while len(self.buf) < n:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(self.buf, n)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def read(self, n):
        if self.buf:
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        return await self.reader.read(n)


async def websocket(reader, writer, lower):
    key = lower.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    writer.write((
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    await writer.drain()
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(length)))
            if opcode == 0x8:
                writer.write(ws_frame(0x8, data[:2]))
                await writer.drain()
                return
            if opcode == 0x9:
                writer.write(ws_frame(0xA, data))
            elif opcode in (0x0, 0x1, 0x2):
                writer.write(ws_frame(opcode, data, fin=bool(b0 & 0x80)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return


def ws_frame(opcode, data, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(data)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + data


class H2Session:
    """One server-side HTTP/2 connection: each complete request is echoed on its stream."""

    def __init__(self, pod, reader, writer, tls):
        self.pod = pod
        self.reader = reader
        self.writer = writer
        self.tls = tls
        self.remote = "%s:%d" % writer.get_extra_info("peername")[:2]
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        self.streams = {}
        self.tasks = set()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def run(self, upgrade=None):
        if upgrade is None:
            self.conn.initiate_connection()
        else:
            settings, req = upgrade
            self.conn.initiate_upgrade_connection(settings)
            self.start(1, req)
        self.flush()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self.on_event(event)
                self.flush()
                await self.writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        for t in list(self.tasks):
            t.cancel()

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = [event.headers, b""]
            if event.stream_ended:
                self.complete(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            if event.stream_id in self.streams:
                self.streams[event.stream_id][1] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)

    def complete(self, stream_id):
        headers, body = self.streams.pop(stream_id, (None, None))
        if headers is None:
            return
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        plain = [(k, v) for k, v in headers if not k.startswith(":")]
        req = to_request(pseudo.get(":method", "GET"), pseudo.get(":path", "/"), "HTTP/2.0", plain, body,
                         self.remote, self.tls)
        req.host = pseudo.get(":authority", "") or req.host
        self.start(stream_id, req)

    def start(self, stream_id, req):
        task = asyncio.ensure_future(self.answer(stream_id, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, stream_id, req):
        (status, headers, body), delay = handle(self.pod, req)
        if delay:
            await asyncio.sleep(delay)
        out = [(":status", str(status))] + [(k.lower(), v) for k, v in headers]
        out.append(("content-length", str(len(body))))
        try:
            if req.method == "HEAD" or not body:
                self.conn.send_headers(stream_id, out, end_stream=True)
            else:
                self.conn.send_headers(stream_id, out)
                self.conn.send_data(stream_id, body, end_stream=True)
            self.flush()
            await self.writer.drain()
        except (h2.exceptions.ProtocolError, ConnectionError, h2.exceptions.StreamClosedError):
            pass


async def upgrade_h2c(pod, reader, writer, method, uri, headers, body, remote):
    settings = ",".join(v for k, v in headers if k.lower() == "http2-settings")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    await writer.drain()
    # The upgrade request's own headers: the hop-by-hop ones of the upgrade stay out, as Go's
    # h2c handler drops them.
    hop = {"connection", "upgrade", "http2-settings"}
    req = to_request(method, uri, "HTTP/2.0", [(k, v) for k, v in headers if k.lower() not in hop], body, remote, None)
    session = H2Session(pod, reader, writer, None)
    await session.run(upgrade=(settings, req))


async def on_connection(pod, port, reader, writer):
    try:
        if port == H2C_PORT:
            first = b""
            while len(first) < len(H2_PREFACE):
                chunk = await reader.read(len(H2_PREFACE) - len(first))
                if not chunk:
                    break
                first += chunk
                if not H2_PREFACE.startswith(first):
                    break
            if first == H2_PREFACE:
                await H2Session(pod, prepend(reader, first), writer, None).run()
            else:
                await serve_h1(pod, reader, writer, first=first, h2c_port=True)
        elif port == HTTPS_PORT and tls_alpn(writer) == "h2":
            await H2Session(pod, reader, writer, tls_info(writer)).run()
        else:
            await serve_h1(pod, reader, writer)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def tls_alpn(writer):
    sslobj = writer.get_extra_info("ssl_object")
    return sslobj.selected_alpn_protocol() if sslobj else None


def tls_context(pod):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pod.cert, pod.key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])

    def remember_sni(sslobj, name, _ctx):
        sslobj.kgw_sni = name or ""

    ctx.sni_callback = remember_sni
    return ctx


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", required=True)
    parser.add_argument("--log-dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.log_dir, exist_ok=True)
    with open(args.pods) as f:
        pods = [Pod(p, args.log_dir) for p in json.load(f)]
    servers = []
    for pod in pods:
        ports = [HTTP_PORT, H2C_PORT] + ([HTTPS_PORT] if pod.cert else [])
        for port in ports:
            ctx = tls_context(pod) if port == HTTPS_PORT else None

            def handler(r, w, pod=pod, port=port):
                return on_connection(pod, port, r, w)

            servers.append(await asyncio.start_server(handler, pod.ip, port, ssl=ctx, reuse_address=True))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
