"""The conformance suite's HTTP client, as its Go helpers send and judge requests (SCHEMA.md,
"How the request is sent" and "How the response is judged"): one connection per request,
X-Echo-Set-Header always sent, HTTP/1.1 (plain or TLS), HTTP/2 over TLS, h2c with prior
knowledge; responses compared by CompareRoundTrip's rules."""

import datetime
import ipaddress
import json
import re
import socket
import ssl
import time
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import h2.config
import h2.connection
import h2.events

REQUEST_TIMEOUT = 10.0
REDIRECT_STATUSES = {300, 301, 302, 303, 304, 305, 307, 308}


class TransportError(Exception):
    """The round trip did not complete (connect, TLS, a closed connection, a timeout)."""


class Response:
    def __init__(self, status, headers, body, proto):
        self.status = status
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self.proto = proto

    def values(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name):
        """Go's resp.Header.Get: the first value, '' when absent."""
        v = self.values(name)
        return v[0] if v else ""


def canonical(name):
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def split_host_port(address):
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.lstrip(":")
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, port
    return address, ""


def join_host_port(host, port):
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port != "" else host


class TlsTransport:
    """Client TLS as the suite's transport: SNI = server_name, the given CA the only root,
    optionally a client certificate; remembers whether the server asked for one."""

    def __init__(self, server_name, ca_pem, client_cert_file=None, client_key_file=None, alpn=None):
        self.server_name = server_name
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The server certificate is checked after the handshake by Go's rules (verify_peer):
        # OpenSSL neither takes a self-signed leaf as its own root nor a wildcard over one label
        # (`*.org`), both of which Go, and so the suite, accepts.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.roots = [x509.load_pem_x509_certificate(block.encode()) for block in PEM_CERT_RE.findall(ca_pem)]
        if client_cert_file:
            ctx.load_cert_chain(client_cert_file, client_key_file)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.ctx = ctx
        self.certificate_requested = False

        # CPython's message callback is the only way to see a CertificateRequest from Python.
        def on_message(_conn, _direction, _version, _content_type, msg_type, _data):
            if msg_type == ssl._TLSMessageType.CERTIFICATE_REQUEST:
                self.certificate_requested = True

        ctx._msg_callback = on_message

    def wrap(self, sock):
        tls = self.ctx.wrap_socket(sock, server_hostname=self.server_name)
        problem = verify_peer(tls.getpeercert(binary_form=True), self.roots, self.server_name)
        if problem:
            tls.close()
            raise ssl.SSLError(problem)
        return tls


PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def signed_by(cert, issuer):
    """Whether `issuer` (its subject and key) signed `cert`."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def verify_peer(der, roots, name):
    """Go's x509 Verify (the chain: the leaf is a root, or a root signed it; this corpus has no
    intermediates) then VerifyHostname: None when the certificate is good for `name`."""
    if der is None:
        return "the server sent no certificate"
    cert = x509.load_der_x509_certificate(der)
    # cryptography 42 has the aware *_utc properties; Debian's 38 only the naive UTC ones.
    if hasattr(cert, "not_valid_before_utc"):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        now = datetime.datetime.now(datetime.timezone.utc)
    else:
        start, end = cert.not_valid_before, cert.not_valid_after
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if not start <= now <= end:
        return f"x509: certificate has expired or is not yet valid (valid {start} .. {end})"
    trusted = any(root == cert or signed_by(cert, root) for root in roots)
    if not trusted:
        return f"x509: certificate signed by unknown authority (issuer {cert.issuer.rfc4514_string()})"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return f"x509: certificate is not valid for any names, but wanted to match {name}"
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if ip in san.get_values_for_type(x509.IPAddress):
            return None
        return f"x509: certificate is not valid for IP {name}"
    host = name.lower().rstrip(".")
    dns = san.get_values_for_type(x509.DNSName)
    for pattern in dns:
        p_parts, h_parts = pattern.lower().split("."), host.split(".")
        if pattern and host and len(p_parts) == len(h_parts) and all(
                (i == 0 and p == "*") or p == h for i, (p, h) in enumerate(zip(p_parts, h_parts))):
            return None
    return f"x509: certificate is valid for {', '.join(dns)}, not {name}"


def connect(address, tls=None):
    host, port = split_host_port(address)
    try:
        sock = socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT)
    except OSError as e:
        raise TransportError(f"cannot connect to {address}: {e}") from None
    if tls is not None:
        try:
            sock = tls.wrap(sock)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise TransportError(f"TLS handshake with {address} (SNI {tls.server_name}) failed: {e}") from None
    return sock


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        try:
            chunk = self.sock.recv(65536)
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"reading the response failed: {e}") from None
        if not chunk:
            return False
        self.buf += chunk
        return True

    def until(self, sep, what):
        while sep not in self.buf:
            if not self.fill():
                raise TransportError(f"the connection closed before the {what} ended"
                                     + (f" (got {self.buf[:200]!r})" if self.buf else " (no byte received)"))
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise TransportError(f"the connection closed {n - len(self.buf)} bytes before the body ended")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self):
        while self.fill():
            pass
        out, self.buf = self.buf, b""
        return out


def http1(address, method, target, host, headers, tls=None):
    """One HTTP/1.1 request on its own connection (`Connection: close`, as Go with keep-alives
    disabled). `headers` = [(name, value)]."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: Go-http-client/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    if method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    lines += ["Connection: close", "Accept-Encoding: gzip"]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock = connect(address, tls)
    try:
        try:
            sock.sendall(raw)
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"sending the request failed: {e}") from None
        r = Reader(sock)
        while True:
            head = r.until(b"\r\n\r\n", "response head").decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise TransportError(f"malformed status line {status_line!r}")
            status = int(parts[1])
            resp_headers = []
            for line in header_lines:
                if line:
                    k, _, v = line.partition(":")
                    resp_headers.append((k.strip(), v.strip()))
            if 100 <= status < 200 and status != 101:
                continue
            break
        resp = Response(status, resp_headers, b"", parts[0])
        te = ",".join(resp.values("transfer-encoding")).lower()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in te:
            body = b""
            while True:
                size = int(r.until(b"\r\n", "chunk size").split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while r.until(b"\r\n", "trailers") != b"\r\n":
                        pass
                    break
                body += r.exactly(size)
                r.exactly(2)
        elif resp.values("content-length"):
            body = r.exactly(int(resp.values("content-length")[0]))
        else:
            body = r.rest()
        resp.body = body
        return resp
    except socket.timeout:
        raise TransportError(f"no complete response within {REQUEST_TIMEOUT:.0f} s") from None
    finally:
        sock.close()


def http2(address, method, scheme, path, host, headers, tls=None):
    """One HTTP/2 request on its own connection: over TLS (ALPN h2) or h2c with prior knowledge."""
    sock = connect(address, tls)
    try:
        if tls is not None and sock.selected_alpn_protocol() != "h2":
            raise TransportError(f"the server did not agree to HTTP/2 (ALPN {sock.selected_alpn_protocol()!r})")
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        hdrs = [(":method", method), (":scheme", scheme), (":authority", host), (":path", path),
                ("user-agent", "Go-http-client/2.0")]
        hdrs += [(k.lower(), v) for k, v in headers]
        hdrs.append(("accept-encoding", "gzip"))
        conn.send_headers(1, hdrs, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, resp_headers, body = None, [], b""
        while True:
            try:
                data = sock.recv(65536)
            except (OSError, ssl.SSLError) as e:
                raise TransportError(f"reading the HTTP/2 response failed: {e}") from None
            if not data:
                raise TransportError("the connection closed before the HTTP/2 response ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    for k, v in event.headers:
                        if k == ":status":
                            status = int(v)
                        elif not k.startswith(":"):
                            resp_headers.append((canonical(k), v))
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    return Response(status, resp_headers, body, "HTTP/2.0")
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                    raise TransportError(f"the server reset the stream (error code {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise TransportError(f"the server sent GOAWAY (error code {event.error_code})")
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except socket.timeout:
        raise TransportError(f"no complete response within {REQUEST_TIMEOUT:.0f} s") from None
    except h2.exceptions.ProtocolError as e:
        raise TransportError(f"HTTP/2 protocol error: {e}") from None
    finally:
        sock.close()


def send(req, address, set_response_headers=None, tls=None, follow_redirects=True):
    """Sends an expectation's `request` to `address` (host:port) as MakeRequest does. Returns
    (Response, request URL host, path) of the last hop."""
    scheme = req.get("scheme", "http")
    path = req.get("path", "/")
    url_host = address
    host, port = split_host_port(address)
    if (scheme == "http" and port == "80") or (scheme == "https" and port == "443"):
        url_host = join_host_port(host, "")
    host_header = req.get("host") or url_host
    headers = [(canonical(k), v) for k, v in (req.get("headers") or {}).items()]
    echo_set = ",".join(f"{k}:{v}" for k, v in (set_response_headers or {}).items())
    headers.append(("X-Echo-Set-Header", echo_set))
    method = req.get("method", "GET")
    protocol = req.get("protocol", "HTTP")
    for _hop in range(10):
        if protocol == "H2":
            resp = http2(address, method, "https", path, host_header, headers, tls)
        elif protocol == "H2C_PRIOR_KNOWLEDGE":
            resp = http2(address, method, "http", path, host_header, headers, None)
        else:
            resp = http1(address, method, path, host_header, headers, tls if scheme == "https" or tls else None)
        if req.get("unfollow_redirect") or not follow_redirects or resp.status not in (301, 302, 303, 307, 308):
            return resp
        location = resp.header("Location")
        if not location:
            return resp
        u = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{url_host}{path}", location))
        scheme = u.scheme
        port = u.port or (443 if scheme == "https" else 80)
        address = join_host_port(u.hostname, port)
        host_header = u.netloc
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if resp.status == 303:
            method = "GET"
    return resp


def captured_request(resp, method):
    """What the echo backend saw: parsed only from an `application/json` response."""
    if resp.header("Content-Type") != "application/json":
        return {"path": "", "host": "", "method": method, "headers": {}, "namespace": "", "pod": ""}
    try:
        echo = json.loads(resp.body)
    except ValueError as e:
        raise TransportError(f"unexpected error reading the echo JSON: {e}; body {resp.body[:200]!r}") from None
    echo.setdefault("headers", {})
    return echo


def compare(exp, resp, sent_scheme):
    """CompareRoundTrip: None when `resp` satisfies the expectation, else why not."""
    if resp.status in REDIRECT_STATUSES and exp["request"].get("unfollow_redirect"):
        # Go's round tripper reads Location of every redirect it does not follow: none is an error.
        location = resp.header("Location")
        if not location:
            return f"transport: the {resp.status} redirect has no Location header"
    want = exp.get("response", {}).get("status_codes") or [200]
    if resp.status in (408, 504) and any(s in (408, 504) for s in want):
        return None
    if resp.status not in want:
        return f"expected status code to be one of {want}, got {resp.status}{body_hint(resp)}"
    proto = exp.get("response", {}).get("protocol")
    if proto and proto != resp.proto:
        return f"expected protocol {proto}, got {resp.proto}"
    if resp.status in (200, 204):
        sent_method = exp["request"].get("method", "GET")
        try:
            cr = captured_request(resp, sent_method)
        except TransportError as e:
            return str(e)
        er = exp.get("expected_request") or {}
        if er.get("host") is not None and er["host"] != cr.get("host"):
            return f"expected host to be {er['host']!r}, got {cr.get('host')!r}"
        if er.get("path", exp["request"].get("path", "/")) != cr.get("path"):
            return f"expected path to be {er.get('path')!r}, got {cr.get('path')!r}"
        if er.get("method", sent_method) != cr.get("method"):
            return f"expected method to be {er.get('method')!r}, got {cr.get('method')!r}"
        if exp.get("namespace", "") != cr.get("namespace", ""):
            return f"expected namespace to be {exp.get('namespace', '')!r}, got {cr.get('namespace', '')!r}"
        echoed = {k.lower(): v for k, v in cr.get("headers", {}).items()}
        for name, value in (er.get("headers") or {}).items():
            got = echoed.get(name.lower())
            if got is None:
                return f"expected {name} header to be set, actual headers: {cr.get('headers')}"
            if ",".join(got) != value:
                return f"expected {name} header to be set to {value!r}, got {','.join(got)!r}"
        ignore_ws = exp.get("response", {}).get("ignore_whitespace")

        def norm(s):
            return s.replace(" ", "") if ignore_ws else s

        for name, values in (exp.get("response", {}).get("valid_header_values") or {}).items():
            got = resp.values(name)
            if not got:
                return f"expected response header {name} to be set, actual headers: {resp.headers}"
            if norm(",".join(got)) not in [norm(v) for v in values]:
                return f"expected response header {name} to be one of {values}, got {','.join(got)!r}"
        for name, value in (exp.get("response", {}).get("headers") or {}).items():
            got = resp.values(name)
            if not got:
                return f"expected response header {name} to be set, actual headers: {resp.headers}"
            if norm(",".join(got)) != norm(value):
                return f"expected response header {name} to be set to {value!r}, got {','.join(got)!r}"
        for name in exp.get("response", {}).get("absent_headers") or []:
            if resp.values(name):
                return f"expected response header {name} to be absent, got {','.join(resp.values(name))!r}"
        for name in er.get("absent_headers") or []:
            if name.lower() in echoed:
                return f"expected {name} header to not be set, got {','.join(echoed[name.lower()])!r}"
        backend = exp.get("backend", "")
        if not cr.get("pod", "").startswith(backend):
            return f"expected pod name to start with {backend!r}, got {cr.get('pod', '')!r}"
        return None
    if resp.status in REDIRECT_STATUSES and exp.get("redirect") is not None:
        location = resp.header("Location")
        if not location:
            return "the redirect has no Location header"
        u = urllib.parse.urlsplit(location)
        r = exp["redirect"]
        if r.get("host") is not None and r["host"] != (u.hostname or ""):
            return f"expected redirected hostname to be {r['host']!r}, got {u.hostname or ''!r} (Location {location})"
        if r.get("scheme", sent_scheme) != u.scheme:
            return f"expected redirected scheme to be {r.get('scheme', sent_scheme)!r}, got {u.scheme!r} (Location {location})"
        want_path = r.get("path", exp["request"].get("path", "/").split("?", 1)[0])
        if want_path != u.path:
            return f"expected redirected path to be {want_path!r}, got {u.path!r} (Location {location})"
        try:
            port = str(u.port) if u.port is not None else ""
        except ValueError:
            return f"the Location {location!r} has an invalid port"
        if r.get("port") is not None:
            if str(r["port"]) != port:
                return f"expected redirected port to be {r['port']}, got {port!r} (Location {location})"
        elif u.scheme == "http" and port not in ("", "80"):
            return f"expected redirected port to be empty or 80 for http, got {port!r} (Location {location})"
        elif u.scheme == "https" and port not in ("", "443"):
            return f"expected redirected port to be empty or 443 for https, got {port!r} (Location {location})"
    return None


def body_hint(resp):
    text = resp.body[:160].decode("latin-1", "replace").strip().replace("\n", " ")
    return f" (body: {text!r})" if text else ""


def now():
    return time.monotonic()
