#!/usr/bin/env python3
"""An HTTP/2 conformance suite in the manner of h2spec (which is not packaged in Debian and
cannot be built here): each case opens its own connection, sends real frames (some of them
deliberately malformed) and checks that the server answers as RFC 9113 (HTTP/2) and RFC 7541
(HPACK) require. Cases carry h2spec's section numbers (generic/..., http2/..., hpack/...) so
results compare with h2spec's on the same server.

Like h2spec, a required connection error passes on a GOAWAY with the expected code or on the
connection being closed; a required stream error passes on RST_STREAM or GOAWAY with the
expected code, or on the connection being closed.

Usage: h2_conformance.py --port N [--host H] [--tls] [--authority A] [--path P]
       [--accepted FILE] [--timeout S] [--only PREFIX] [--json]
Exit status 0 when every failing case is listed in the accepted file, 1 otherwise.
The request path must answer GET, HEAD and POST with a body of at least 16 bytes.
"""
import argparse
import json
import socket
import ssl
import struct
import sys
import time

import hpack
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION"]
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, \
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
               "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
# Settings.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
MAX_WINDOW = 2**31 - 1
HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def err_name(code):
    return ERROR_NAMES[code] if code < len(ERROR_NAMES) else f"0x{code:x}"


def frame(ftype, flags, stream, payload=b""):
    """One frame on the wire: 9-byte header, then the payload (no checks: some cases need it wrong)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def settings_frame(values=(), flags=0, stream=0):
    return frame(SETTINGS, flags, stream, b"".join(struct.pack(">HI", k, v) for k, v in values))


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_stream(stream, code):
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def ping(data=b"h2spec\x00\x00", flags=0, stream=0):
    return frame(PING, flags, stream, data)


def goaway(last, code, stream=0):
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code))


def priority(stream, depends_on=0, weight=15, exclusive=False):
    dep = depends_on | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dep, weight))


def hpack_int(value, prefix_bits, first_byte_flags):
    """An HPACK integer (RFC 7541 5.1) with its representation's flag bits in the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value, huffman_value=None):
    """A literal header field without indexing, new name (RFC 7541 6.2.2), never Huffman-coded
    (so upper-case names and odd bytes go on the wire exactly as given)."""
    name, value = name.encode() if isinstance(name, str) else name, value.encode() if isinstance(value, str) else value
    out = b"\x00" + hpack_int(len(name), 7, 0) + name
    if huffman_value is not None:
        return out + hpack_int(len(huffman_value), 7, 0x80) + huffman_value
    return out + hpack_int(len(value), 7, 0) + value


def huffman(text):
    return HUFFMAN.encode(text.encode())


def huffman_string(text):
    """An HPACK string literal, Huffman-coded (RFC 7541 5.2)."""
    coded = huffman(text)
    return hpack_int(len(coded), 7, 0x80) + coded


def huffman_literal(first_byte, name, value):
    """A literal header field with a new name, name and value Huffman-coded; `first_byte` picks
    the representation (0x40 with indexing, 0x00 without, 0x10 never indexed)."""
    return bytes([first_byte]) + huffman_string(name) + huffman_string(value)


OPENED = []  # the connections of the running case, for the frames they received


class Closed(Exception):
    pass


class Target:
    def __init__(self, args):
        self.host, self.port, self.tls = args.host, args.port, args.tls
        self.authority = args.authority or f"{args.host}:{args.port}"
        self.path = args.path
        self.timeout = args.timeout
        self.scheme = "https" if args.tls else "http"


class Conn:
    """One client connection, frame by frame."""

    def __init__(self, target):
        self.t = target
        sock = socket.create_connection((target.host, target.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=target.authority.split(":")[0])
            if sock.selected_alpn_protocol() != "h2":
                raise RuntimeError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        self.sock = sock
        self.buf = b""
        self.closed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings = {}
        self.log = []
        OPENED.append(self)

    def send(self, *chunks):
        try:
            self.sock.sendall(b"".join(chunks))
        except OSError:
            # The server may already have closed: what it sent before is what the case checks.
            pass

    def read_frame(self, timeout=None):
        """The next frame (type, flags, stream, payload), None on timeout; raises Closed at EOF."""
        deadline = time.monotonic() + (self.t.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    self.note(ftype, flags, stream, payload)
                    return ftype, flags, stream, payload
            if self.closed:
                raise Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
            self.buf += chunk

    def note(self, ftype, flags, stream, payload):
        name = FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else f"type{ftype}"
        extra = ""
        if ftype == GOAWAY and len(payload) >= 8:
            extra = " " + err_name(struct.unpack(">I", payload[4:8])[0])
        elif ftype == RST_STREAM and len(payload) == 4:
            extra = " " + err_name(struct.unpack(">I", payload)[0])
        elif ftype == HEADERS:
            try:
                block = payload
                if flags & PADDED:
                    block = block[1:len(block) - block[0]]
                if flags & PRIORITY_FLAG:
                    block = block[5:]
                headers = self.decoder.decode(block)
                extra = " " + " ".join(f"{k}={v}" for k, v in headers if k.startswith(":"))
            except Exception as e:  # the log is informative only
                extra = f" (undecodable: {e})"
        self.log.append(f"{name}(stream={stream} len={len(payload)}{extra})")

    def handshake(self, settings=()):
        """Preface and SETTINGS; waits for the server's SETTINGS and its ACK of ours, answers its
        SETTINGS with an ACK."""
        self.send(PREFACE, settings_frame(settings))
        got_settings = got_ack = False
        deadline = time.monotonic() + 5
        while not (got_settings and got_ack):
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if f is None:
                raise RuntimeError("handshake: no SETTINGS (and ACK) from the server")
            ftype, flags, _, payload = f
            if ftype == SETTINGS and flags & ACK:
                got_ack = True
            elif ftype == SETTINGS:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                self.send(settings_frame(flags=ACK))
                got_settings = True

    @property
    def max_frame_size(self):
        return self.server_settings.get(MAX_FRAME_SIZE, 16384)

    def request_headers(self, method="GET", extra=(), path=None):
        return [(":method", method), (":scheme", self.t.scheme), (":path", path or self.t.path),
                (":authority", self.t.authority)] + list(extra)

    def block(self, headers):
        return self.encoder.encode(headers)

    def headers_frame(self, stream, headers=None, end_stream=True, end_headers=True, method="GET", flags=0):
        block = self.block(headers if headers is not None else self.request_headers(method))
        flags |= (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream, block)

    def get(self, stream, end_stream=True):
        self.send(self.headers_frame(stream, end_stream=end_stream))


# ---- verdicts ---------------------------------------------------------------------------------

class Fail(Exception):
    pass


def codes_text(codes):
    return "/".join(err_name(c) for c in codes)


def expect_connection_error(c, *codes):
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail(f"expected GOAWAY {codes_text(codes)} or the connection closed; nothing came")
            ftype, _, _, payload = f
            if ftype == GOAWAY:
                code = struct.unpack(">I", payload[4:8])[0]
                if code in codes:
                    return f"GOAWAY {err_name(code)}"
                raise Fail(f"expected GOAWAY {codes_text(codes)}; got GOAWAY {err_name(code)}")
    except Closed:
        return "connection closed"


def expect_stream_error(c, stream, *codes):
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail(f"expected RST_STREAM or GOAWAY {codes_text(codes)}; nothing came")
            ftype, _, fstream, payload = f
            if ftype == GOAWAY:
                code = struct.unpack(">I", payload[4:8])[0]
                if code in codes:
                    return f"GOAWAY {err_name(code)}"
                raise Fail(f"expected {codes_text(codes)}; got GOAWAY {err_name(code)}")
            if ftype == RST_STREAM and fstream == stream:
                code = struct.unpack(">I", payload)[0]
                if code in codes:
                    return f"RST_STREAM {err_name(code)}"
                raise Fail(f"expected {codes_text(codes)}; got RST_STREAM {err_name(code)}")
    except Closed:
        return "connection closed"


def expect_headers(c, stream):
    """A response HEADERS on `stream` (the request was served)."""
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail(f"expected a response HEADERS on stream {stream}; nothing came")
            ftype, _, fstream, payload = f
            if ftype == HEADERS and fstream == stream:
                return "HEADERS"
            if ftype == GOAWAY:
                raise Fail(f"expected a response; got GOAWAY {err_name(struct.unpack('>I', payload[4:8])[0])}")
            if ftype == RST_STREAM and fstream == stream:
                raise Fail(f"expected a response; got RST_STREAM {err_name(struct.unpack('>I', payload)[0])}")
    except Closed:
        raise Fail("expected a response; the connection was closed")


def expect_data(c, stream, length=None):
    """A DATA frame on `stream` (of exactly `length` bytes when given)."""
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail(f"expected DATA on stream {stream}; nothing came")
            ftype, _, fstream, payload = f
            if ftype == DATA and fstream == stream:
                if length is not None and len(payload) != length:
                    raise Fail(f"expected DATA of {length} bytes; got {len(payload)}")
                return f"DATA {len(payload)} bytes"
            if ftype == GOAWAY:
                raise Fail(f"expected DATA; got GOAWAY {err_name(struct.unpack('>I', payload[4:8])[0])}")
            if ftype == RST_STREAM and fstream == stream:
                raise Fail(f"expected DATA; got RST_STREAM {err_name(struct.unpack('>I', payload)[0])}")
    except Closed:
        raise Fail("expected DATA; the connection was closed")


def expect_ping_ack(c, data=b"h2spec\x00\x00"):
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail("expected a PING ACK; nothing came")
            ftype, flags, _, payload = f
            if ftype == PING and flags & ACK:
                if payload != data:
                    raise Fail(f"PING ACK with payload {payload!r}, not {data!r}")
                return "PING ACK"
            if ftype == GOAWAY:
                raise Fail(f"expected a PING ACK; got GOAWAY {err_name(struct.unpack('>I', payload[4:8])[0])}")
    except Closed:
        raise Fail("expected a PING ACK; the connection was closed")


def expect_alive(c):
    """The connection still works: a PING is answered (h2spec's check after a frame that must be
    ignored)."""
    c.send(ping(b"alive!!!"))
    expect_ping_ack(c, b"alive!!!")
    return "connection alive (PING answered)"


def expect_settings_ack(c):
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail("expected a SETTINGS ACK; nothing came")
            ftype, flags, _, payload = f
            if ftype == SETTINGS and flags & ACK:
                return "SETTINGS ACK"
            if ftype == GOAWAY:
                raise Fail(f"expected a SETTINGS ACK; got GOAWAY {err_name(struct.unpack('>I', payload[4:8])[0])}")
    except Closed:
        raise Fail("expected a SETTINGS ACK; the connection was closed")


def wait_stream_end(c, stream):
    """Reads until the response on `stream` has ended (END_STREAM or RST_STREAM)."""
    while True:
        f = c.read_frame()
        if f is None:
            raise Fail(f"the response on stream {stream} did not end")
        ftype, flags, fstream, _ = f
        if fstream == stream and (ftype in (DATA, HEADERS) and flags & END_STREAM or ftype == RST_STREAM):
            return
        if fstream == stream and ftype == DATA:
            c.send(window_update(0, 65535), window_update(stream, 65535))


# ---- cases ------------------------------------------------------------------------------------

CASES = []


def case(cid, description):
    def register(fn):
        CASES.append((cid, description, fn))
        return fn
    return register


def conn(t, settings=()):
    c = Conn(t)
    c.handshake(settings)
    return c


# generic: the basics every server should serve.

@case("generic/1/1", "Sends a client connection preface")
def _(t):
    c = Conn(t)
    c.send(PREFACE, settings_frame())
    while True:
        f = c.read_frame()
        if f is None:
            raise Fail("no SETTINGS from the server")
        if f[0] == SETTINGS and not f[1] & ACK:
            return "SETTINGS"


@case("generic/2/1", "Sends a PRIORITY frame on idle stream")
def _(t):
    c = conn(t)
    c.send(priority(1, 0, 255))
    c.get(1)
    return expect_headers(c, 1)


@case("generic/2/2", "Sends a WINDOW_UPDATE frame on half-closed (remote) stream")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(window_update(1, 1))
    return expect_data(c, 1)


@case("generic/2/3", "Sends a PRIORITY frame on half-closed (remote) stream")
def _(t):
    c = conn(t)
    c.get(1)
    c.send(priority(1, 0, 255))
    return expect_headers(c, 1)


@case("generic/2/4", "Sends a RST_STREAM frame on half-closed (remote) stream")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(rst_stream(1, CANCEL))
    return expect_alive(c)


@case("generic/2/5", "Sends a PRIORITY frame on closed stream")
def _(t):
    c = conn(t)
    c.get(1)
    wait_stream_end(c, 1)
    c.send(priority(1, 0, 255))
    return expect_alive(c)


@case("generic/3.1/1", "Sends a DATA frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, END_STREAM, 1, b"test"))
    return expect_headers(c, 1)


@case("generic/3.1/2", "Sends multiple DATA frames")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, 0, 1, b"test"),
           frame(DATA, END_STREAM, 1, b"test"))
    return expect_headers(c, 1)


@case("generic/3.1/3", "Sends a DATA frame with padding")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False),
           frame(DATA, END_STREAM | PADDED, 1, b"\x08test" + b"\x00" * 8))
    return expect_headers(c, 1)


@case("generic/3.2/1", "Sends a HEADERS frame")
def _(t):
    c = conn(t)
    c.get(1)
    return expect_headers(c, 1)


@case("generic/3.2/2", "Sends a HEADERS frame with padding")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, b"\x08" + block + b"\x00" * 8))
    return expect_headers(c, 1)


@case("generic/3.2/3", "Sends a HEADERS frame with priority")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1, struct.pack(">IB", 0, 255) + block))
    return expect_headers(c, 1)


@case("generic/3.3/1", "Sends a PRIORITY frame with priority 1")
def _(t):
    c = conn(t)
    c.send(priority(1, 0, 0))
    c.get(1)
    return expect_headers(c, 1)


@case("generic/3.3/2", "Sends a PRIORITY frame with priority 256")
def _(t):
    c = conn(t)
    c.send(priority(1, 0, 255))
    c.get(1)
    return expect_headers(c, 1)


@case("generic/3.3/3", "Sends a PRIORITY frame with stream dependency")
def _(t):
    c = conn(t)
    c.send(priority(1, 0, 15), priority(3, 1, 15))
    c.get(3)
    return expect_headers(c, 3)


@case("generic/3.3/4", "Sends a PRIORITY frame with exclusive")
def _(t):
    c = conn(t)
    c.send(priority(1, 0, 15), priority(3, 1, 15, exclusive=True))
    c.get(3)
    return expect_headers(c, 3)


@case("generic/3.3/5", "Sends a PRIORITY frame for an idle stream, then send a HEADER frame for a lower stream ID")
def _(t):
    c = conn(t)
    c.send(priority(5, 0, 15))
    c.get(3)
    return expect_headers(c, 3)


@case("generic/3.4/1", "Sends a RST_STREAM frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, end_stream=False), rst_stream(1, CANCEL))
    return expect_alive(c)


@case("generic/3.5/1", "Sends a SETTINGS frame")
def _(t):
    c = conn(t)
    c.send(settings_frame([(ENABLE_PUSH, 0)]))
    return expect_settings_ack(c)


@case("generic/3.7/1", "Sends a PING frame")
def _(t):
    c = conn(t)
    c.send(ping())
    return expect_ping_ack(c)


@case("generic/3.8/1", "Sends a GOAWAY frame")
def _(t):
    c = conn(t)
    c.send(goaway(0, NO_ERROR))
    # The server may close or keep answering PINGs until it closes; either is fine, an error is not.
    c.send(ping())
    try:
        while True:
            f = c.read_frame()
            if f is None:
                return "no answer (the server is closing)"
            if f[0] == PING and f[1] & ACK:
                return "PING ACK"
            if f[0] == GOAWAY:
                code = struct.unpack(">I", f[3][4:8])[0]
                if code != NO_ERROR:
                    raise Fail(f"answered GOAWAY with GOAWAY {err_name(code)}")
                return "GOAWAY NO_ERROR"
    except Closed:
        return "connection closed"


@case("generic/3.9/1", "Sends a WINDOW_UPDATE frame with stream ID 0")
def _(t):
    c = conn(t)
    c.send(window_update(0, 1))
    return expect_alive(c)


@case("generic/3.9/2", "Sends a WINDOW_UPDATE frame with arbitrary stream ID")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(window_update(1, 1))
    return expect_data(c, 1)


@case("generic/3.10/1", "Sends a CONTINUATION frame")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block[:5]), frame(CONTINUATION, END_HEADERS, 1, block[5:]))
    return expect_headers(c, 1)


@case("generic/3.10/2", "Sends multiple CONTINUATION frames")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block[:3]), frame(CONTINUATION, 0, 1, block[3:6]),
           frame(CONTINUATION, END_HEADERS, 1, block[6:]))
    return expect_headers(c, 1)


@case("generic/4/1", "Sends a GET request")
def _(t):
    c = conn(t)
    c.get(1)
    return expect_headers(c, 1)


@case("generic/4/2", "Sends a HEAD request")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="HEAD"))
    return expect_headers(c, 1)


@case("generic/4/3", "Sends a POST request")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, END_STREAM, 1, b"test"))
    return expect_headers(c, 1)


@case("generic/4/4", "Sends a POST request with trailers")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, 0, 1, b"test"),
           c.headers_frame(1, headers=[("x-trailer", "yes")], end_stream=True))
    return expect_headers(c, 1)


def hpack_case(cid, description, headers_of):
    @case(cid, description)
    def _(t):
        c = conn(t)
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, headers_of(c)))
        return expect_headers(c, 1)


def pseudo_raw(c):
    return b"".join(literal(k, v) for k, v in c.request_headers())


hpack_case("generic/5/1", "Sends a indexed header field representation",
           lambda c: b"\x82" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/2", "Sends a literal header field with indexing - indexed name",
           lambda c: b"\x42\x03GET" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/3", "Sends a literal header field with indexing - indexed name (with Huffman coding)",
           lambda c: b"\x42\x83\xc5\x83\x7f" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/4", "Sends a literal header field with indexing - new name",
           lambda c: pseudo_raw(c) + b"\x40\x06x-test\x02ok")
hpack_case("generic/5/5", "Sends a literal header field with indexing - new name (with Huffman coding)",
           lambda c: pseudo_raw(c) + huffman_literal(0x40, "x-test", "ok"))
hpack_case("generic/5/6", "Sends a literal header field without indexing - indexed name",
           lambda c: b"\x02\x03GET" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/7", "Sends a literal header field without indexing - indexed name (with Huffman coding)",
           lambda c: b"\x02\x83\xc5\x83\x7f" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/8", "Sends a literal header field without indexing - new name",
           lambda c: pseudo_raw(c) + literal("x-test", "ok"))
hpack_case("generic/5/9", "Sends a literal header field without indexing - new name (huffman encoded)",
           lambda c: pseudo_raw(c) + huffman_literal(0x00, "x-test", "ok"))
hpack_case("generic/5/10", "Sends a literal header field never indexed - indexed name",
           lambda c: b"\x12\x03GET" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/11", "Sends a literal header field never indexed - indexed name (huffman encoded)",
           lambda c: b"\x12\x83\xc5\x83\x7f" + literal(":scheme", c.t.scheme) + literal(":path", c.t.path)
           + literal(":authority", c.t.authority))
hpack_case("generic/5/12", "Sends a literal header field never indexed - new name",
           lambda c: pseudo_raw(c) + b"\x10\x06x-test\x02ok")
hpack_case("generic/5/13", "Sends a literal header field never indexed - new name (huffman encoded)",
           lambda c: pseudo_raw(c) + huffman_literal(0x10, "x-test", "ok"))
hpack_case("generic/5/14", "Sends a dynamic table size update",
           lambda c: hpack_int(4096, 5, 0x20) + pseudo_raw(c))
hpack_case("generic/5/15", "Sends multiple dynamic table size update",
           lambda c: hpack_int(0, 5, 0x20) + hpack_int(4096, 5, 0x20) + pseudo_raw(c))


# http2/3.5: the connection preface.

@case("http2/3.5/1", "Sends client connection preface")
def _(t):
    c = Conn(t)
    c.send(PREFACE, settings_frame())
    while True:
        f = c.read_frame()
        if f is None:
            raise Fail("no SETTINGS")
        if f[0] == SETTINGS and not f[1] & ACK:
            return "SETTINGS"


@case("http2/3.5/2", "Sends invalid connection preface")
def _(t):
    c = Conn(t)
    c.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/4.1: frame format.

@case("http2/4.1/1", "Sends a frame with unknown type")
def _(t):
    c = conn(t)
    c.send(frame(0x16, 0, 0, b"\x00" * 8))
    return expect_alive(c)


@case("http2/4.1/2", "Sends a frame with undefined flag")
def _(t):
    c = conn(t)
    c.send(frame(PING, 0x16, 0, b"h2spec\x00\x00"))
    return expect_ping_ack(c)


@case("http2/4.1/3", "Sends a frame with reserved field bit")
def _(t):
    c = conn(t)
    c.send(ping()[:5] + b"\x80\x00\x00\x00" + b"h2spec\x00\x00")
    return expect_ping_ack(c)


# http2/4.2: frame size.

@case("http2/4.2/1", "Sends a DATA frame with 2^14 octets in length")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, END_STREAM, 1, b"x" * 16384))
    return expect_headers(c, 1)


@case("http2/4.2/2", "Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False),
           frame(DATA, END_STREAM, 1, b"x" * (c.max_frame_size + 1)))
    return expect_stream_error(c, 1, FRAME_SIZE_ERROR)


@case("http2/4.2/3", "Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE")
def _(t):
    c = conn(t)
    headers = c.request_headers(extra=[(f"x-test{i}", "x" * 1000) for i in range(c.max_frame_size // 1000 + 2)])
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"".join(literal(k, v) for k, v in headers)))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


# http2/4.3: header compression.

@case("http2/4.3/1", "Sends invalid header block fragment")
def _(t):
    c = conn(t)
    # A literal with indexing whose name length runs past the end of the block.
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x00\x05:pa"))
    return expect_connection_error(c, COMPRESSION_ERROR)


@case("http2/4.3/2", "Sends a PRIORITY frame while sending the header blocks")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block), priority(1, 0, 255), frame(CONTINUATION, END_HEADERS, 1, b""))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/4.3/3", "Sends a HEADERS frame to another stream while sending the header blocks")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block), c.headers_frame(3))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/5.1: stream states.

@case("http2/5.1/1", "idle: Sends a DATA frame")
def _(t):
    c = conn(t)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1/2", "idle: Sends a RST_STREAM frame")
def _(t):
    c = conn(t)
    c.send(rst_stream(1, CANCEL))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1/3", "idle: Sends a WINDOW_UPDATE frame")
def _(t):
    c = conn(t)
    c.send(window_update(1, 100))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1/4", "idle: Sends a CONTINUATION frame")
def _(t):
    c = conn(t)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block(c.request_headers())))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1/5", "half closed (remote): Sends a DATA frame")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/6", "half closed (remote): Sends a HEADERS frame")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.get(1)
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/7", "half closed (remote): Sends a CONTINUATION frame")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_stream_error(c, 1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1/8", "closed: Sends a DATA frame after sending RST_STREAM frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, end_stream=False), rst_stream(1, CANCEL), frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/9", "closed: Sends a HEADERS frame after sending RST_STREAM frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, end_stream=False), rst_stream(1, CANCEL), c.headers_frame(1))
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/10", "closed: Sends a CONTINUATION frame after sending RST_STREAM frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, end_stream=False), rst_stream(1, CANCEL),
           frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_stream_error(c, 1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1/11", "closed: Sends a DATA frame")
def _(t):
    c = conn(t)
    c.get(1)
    wait_stream_end(c, 1)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/12", "closed: Sends a HEADERS frame")
def _(t):
    c = conn(t)
    c.get(1)
    wait_stream_end(c, 1)
    c.get(1)
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/5.1/13", "closed: Sends a CONTINUATION frame")
def _(t):
    c = conn(t)
    c.get(1)
    wait_stream_end(c, 1)
    c.send(frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_stream_error(c, 1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1.1/1", "Sends even-numbered stream identifier")
def _(t):
    c = conn(t)
    c.get(2)
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1.1/2", "Sends stream identifier that is numerically smaller than previous")
def _(t):
    c = conn(t)
    c.get(5)
    c.get(3)
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/5.1.2/1", "Sends HEADERS frames that causes their advertised concurrent stream limit to be exceeded")
def _(t):
    c = conn(t)
    limit = c.server_settings.get(MAX_CONCURRENT_STREAMS)
    if limit is None or limit > 10000:
        raise Fail(f"the server advertises no usable SETTINGS_MAX_CONCURRENT_STREAMS ({limit})")
    # Streams left open (no END_STREAM), so none of them ends before the last one arrives.
    c.send(*[c.headers_frame(2 * i + 1, end_stream=False, method="POST") for i in range(limit + 1)])
    return expect_stream_error(c, 2 * limit + 1, PROTOCOL_ERROR, REFUSED_STREAM)


@case("http2/5.3.1/1", "Sends HEADERS frame that depends on itself")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1, struct.pack(">IB", 1, 15) + block))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/5.3.1/2", "Sends PRIORITY frame that depend on itself")
def _(t):
    c = conn(t)
    c.send(priority(1, 1, 15))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/5.4.1/1", "Sends an invalid PING frame for connection close")
def _(t):
    c = conn(t)
    c.send(frame(PING, 0, 0, b"\x00" * 6))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


@case("http2/5.4.1/2", "Sends an invalid PING frame to receive GOAWAY frame")
def _(t):
    c = conn(t)
    c.send(frame(PING, 0, 3, b"\x00" * 8))
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail("expected GOAWAY; nothing came")
            if f[0] == GOAWAY:
                return "GOAWAY " + err_name(struct.unpack(">I", f[3][4:8])[0])
    except Closed:
        raise Fail("the connection was closed without a GOAWAY")


@case("http2/5.5/1", "Sends an unknown extension frame")
def _(t):
    c = conn(t)
    c.send(frame(0xFF, 0, 0, b"\x00" * 8))
    return expect_alive(c)


@case("http2/5.5/2", "Sends an unknown extension frame in the middle of a header block")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block), frame(0xFF, 0, 1, b"\x00" * 8))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/6.1: DATA.

@case("http2/6.1/1", "Sends a DATA frame with 0x0 stream identifier")
def _(t):
    c = conn(t)
    c.send(frame(DATA, END_STREAM, 0, b"test"))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.1/2", "Sends a DATA frame on the stream that is not in \"open\" or \"half-closed (local)\" state")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, STREAM_CLOSED)


@case("http2/6.1/3", "Sends a DATA frame with invalid pad length")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False),
           frame(DATA, END_STREAM | PADDED, 1, b"\x06test"))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/6.2: HEADERS.

@case("http2/6.2/1", "Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY frame")
def _(t):
    c = conn(t)
    c.send(frame(HEADERS, END_STREAM, 1, c.block(c.request_headers())), priority(1, 0, 255))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.2/2", "Sends a HEADERS frame to another stream while sending a HEADERS frame")
def _(t):
    c = conn(t)
    c.send(frame(HEADERS, END_STREAM, 1, c.block(c.request_headers())), c.headers_frame(3))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.2/3", "Sends a HEADERS frame with 0x0 stream identifier")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(0))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.2/4", "Sends a HEADERS frame with invalid pad length")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, bytes([len(block) + 1]) + block))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/6.3: PRIORITY.

@case("http2/6.3/1", "Sends a PRIORITY frame with 0x0 stream identifier")
def _(t):
    c = conn(t)
    c.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 15)))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.3/2", "Sends a PRIORITY frame with a length other than 5 octets")
def _(t):
    c = conn(t)
    c.send(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"))
    return expect_stream_error(c, 1, FRAME_SIZE_ERROR)


# http2/6.4: RST_STREAM.

@case("http2/6.4/1", "Sends a RST_STREAM frame with 0x0 stream identifier")
def _(t):
    c = conn(t)
    c.send(rst_stream(0, CANCEL))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.4/2", "Sends a RST_STREAM frame on a idle stream")
def _(t):
    c = conn(t)
    c.send(rst_stream(1, CANCEL))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.4/3", "Sends a RST_STREAM frame with a length other than 4 octets")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x00"))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


# http2/6.5: SETTINGS.

@case("http2/6.5/1", "Sends a SETTINGS frame with ACK flag and payload")
def _(t):
    c = conn(t)
    c.send(frame(SETTINGS, ACK, 0, b"\x00\x03\x00\x00\x00\x64"))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


@case("http2/6.5/2", "Sends a SETTINGS frame with a stream identifier other than 0x0")
def _(t):
    c = conn(t)
    c.send(settings_frame([(MAX_CONCURRENT_STREAMS, 100)], stream=1))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.5/3", "Sends a SETTINGS frame with a length other than a multiple of 6 octets")
def _(t):
    c = conn(t)
    c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


@case("http2/6.5.2/1", "SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1")
def _(t):
    c = conn(t)
    c.send(settings_frame([(ENABLE_PUSH, 2)]))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.5.2/2", "SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the maximum flow control window size")
def _(t):
    c = conn(t)
    c.send(settings_frame([(INITIAL_WINDOW_SIZE, 2**31)]))
    return expect_connection_error(c, FLOW_CONTROL_ERROR)


@case("http2/6.5.2/3", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial value")
def _(t):
    c = conn(t)
    c.send(settings_frame([(MAX_FRAME_SIZE, 16383)]))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.5.2/4", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum allowed frame size")
def _(t):
    c = conn(t)
    c.send(settings_frame([(MAX_FRAME_SIZE, 2**24)]))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.5.2/5", "Sends a SETTINGS frame with unknown identifier")
def _(t):
    c = conn(t)
    c.send(settings_frame([(0xFF, 1)]))
    return expect_settings_ack(c)


@case("http2/6.5.3/1", "Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE")
def _(t):
    c = conn(t)
    c.send(settings_frame([(INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)]))
    expect_settings_ack(c)
    c.get(1)
    return expect_data(c, 1, 1)


@case("http2/6.5.3/2", "Sends a SETTINGS frame without ACK flag")
def _(t):
    c = conn(t)
    c.send(settings_frame([(ENABLE_PUSH, 0)]))
    return expect_settings_ack(c)


# http2/6.7: PING.

@case("http2/6.7/1", "Sends a PING frame")
def _(t):
    c = conn(t)
    c.send(ping())
    return expect_ping_ack(c)


@case("http2/6.7/2", "Sends a PING frame with ACK")
def _(t):
    c = conn(t)
    c.send(ping(b"unexpect", flags=ACK), ping())
    try:
        while True:
            f = c.read_frame()
            if f is None:
                raise Fail("expected the second PING's ACK; nothing came")
            if f[0] == PING and f[1] & ACK:
                if f[3] == b"unexpect":
                    raise Fail("the server answered a PING ACK")
                return "only the PING without ACK was answered"
    except Closed:
        raise Fail("the connection was closed")


@case("http2/6.7/3", "Sends a PING frame with a stream identifier field value other than 0x0")
def _(t):
    c = conn(t)
    c.send(ping(stream=1))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.7/4", "Sends a PING frame with a length field value other than 8")
def _(t):
    c = conn(t)
    c.send(frame(PING, 0, 0, b"\x00" * 6))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


# http2/6.8: GOAWAY.

@case("http2/6.8/1", "Sends a GOAWAY frame with a stream identifier other than 0x0")
def _(t):
    c = conn(t)
    c.send(goaway(0, NO_ERROR, stream=1))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/6.9: WINDOW_UPDATE.

@case("http2/6.9/1", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0")
def _(t):
    c = conn(t)
    c.send(window_update(0, 0))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.9/2", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0 on a stream")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(window_update(1, 0))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/6.9/3", "Sends a WINDOW_UPDATE frame with a length other than 4 octets")
def _(t):
    c = conn(t)
    c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    return expect_connection_error(c, FRAME_SIZE_ERROR)


@case("http2/6.9.1/1", "Sends SETTINGS frame to set the initial window size to 1 and sends HEADERS frame")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 1)])
    c.get(1)
    return expect_data(c, 1, 1)


@case("http2/6.9.1/2", "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1")
def _(t):
    c = conn(t)
    c.send(window_update(0, MAX_WINDOW), window_update(0, MAX_WINDOW))
    return expect_connection_error(c, FLOW_CONTROL_ERROR)


@case("http2/6.9.1/3", "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1 on a stream")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(window_update(1, MAX_WINDOW), window_update(1, MAX_WINDOW))
    return expect_stream_error(c, 1, FLOW_CONTROL_ERROR)


@case("http2/6.9.2/1", "Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    expect_headers(c, 1)
    c.send(settings_frame([(INITIAL_WINDOW_SIZE, 1)]))
    return expect_data(c, 1, 1)


@case("http2/6.9.2/2", "Sends a SETTINGS frame for window size to be negative")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 3)])
    c.get(1)
    expect_data(c, 1, 3)
    # The stream's window goes to 2 - 3 = -1; a WINDOW_UPDATE of 2 brings it back to 1.
    c.send(settings_frame([(INITIAL_WINDOW_SIZE, 2)]))
    expect_settings_ack(c)
    c.send(window_update(1, 2))
    return expect_data(c, 1, 1)


@case("http2/6.9.2/3", "Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded maximum window size value")
def _(t):
    c = conn(t)
    c.send(settings_frame([(INITIAL_WINDOW_SIZE, 2**31)]))
    return expect_connection_error(c, FLOW_CONTROL_ERROR)


# http2/6.10: CONTINUATION.

@case("http2/6.10/1", "Sends multiple CONTINUATION frames preceded by a HEADERS frame")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers(extra=[("x-dummy", "x" * 100)]))
    c.send(frame(HEADERS, END_STREAM, 1, block[:10]), frame(CONTINUATION, 0, 1, block[10:30]),
           frame(CONTINUATION, END_HEADERS, 1, block[30:]))
    return expect_headers(c, 1)


@case("http2/6.10/2", "Sends a CONTINUATION frame followed by any frame other than CONTINUATION")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block[:5]), frame(CONTINUATION, 0, 1, block[5:]),
           frame(DATA, END_STREAM, 1, b"test"))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.10/3", "Sends a CONTINUATION frame with 0x0 stream identifier")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block[:5]), frame(CONTINUATION, END_HEADERS, 0, block[5:]))
    return expect_connection_error(c, PROTOCOL_ERROR)


@case("http2/6.10/4", "Sends a CONTINUATION frame preceded by a HEADERS frame with END_HEADERS flag")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1), frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_connection_error(c, PROTOCOL_ERROR, STREAM_CLOSED)


@case("http2/6.10/5", "Sends a CONTINUATION frame preceded by a CONTINUATION frame with END_HEADERS flag")
def _(t):
    c = conn(t)
    block = c.block(c.request_headers())
    c.send(frame(HEADERS, END_STREAM, 1, block[:5]), frame(CONTINUATION, END_HEADERS, 1, block[5:]),
           frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_connection_error(c, PROTOCOL_ERROR, STREAM_CLOSED)


@case("http2/6.10/6", "Sends a CONTINUATION frame preceded by a DATA frame")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, 0, 1, b"test"),
           frame(CONTINUATION, END_HEADERS, 1, c.block([("x-test", "ok")])))
    return expect_connection_error(c, PROTOCOL_ERROR)


# http2/7: error codes.

@case("http2/7/1", "Sends a GOAWAY frame with unknown error code")
def _(t):
    c = conn(t)
    c.send(goaway(0, 0xFF))
    c.send(ping())
    try:
        while True:
            f = c.read_frame()
            if f is None:
                return "no answer (the server is closing)"
            if f[0] == PING and f[1] & ACK:
                return "PING ACK"
            if f[0] == GOAWAY:
                code = struct.unpack(">I", f[3][4:8])[0]
                if code != NO_ERROR:
                    raise Fail(f"answered with GOAWAY {err_name(code)}")
                return "GOAWAY NO_ERROR"
    except Closed:
        return "connection closed"


@case("http2/7/2", "Sends a RST_STREAM frame with unknown error code")
def _(t):
    c = conn(t, [(INITIAL_WINDOW_SIZE, 0)])
    c.get(1)
    c.send(rst_stream(1, 0xFF))
    return expect_alive(c)


# http2/8.1: HTTP request/response exchange.

@case("http2/8.1/1", "Sends a second HEADERS frame without the END_STREAM flag")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, 0, 1, b"test"),
           c.headers_frame(1, headers=[("x-trailer", "yes")], end_stream=False))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


def bad_request(cid, description, headers_of, *codes):
    codes = codes or (PROTOCOL_ERROR,)

    @case(cid, description)
    def _(t):
        c = conn(t)
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, headers_of(c)))
        return expect_stream_error(c, 1, *codes)


def raw(c, headers):
    return b"".join(literal(k, v) for k, v in headers)


bad_request("http2/8.1.2/1", "Sends a HEADERS frame that contains the header field name in uppercase letters",
            lambda c: raw(c, c.request_headers(extra=[("X-TEST", "ok")])))
bad_request("http2/8.1.2.1/1", "Sends a HEADERS frame that contains a unknown pseudo-header field",
            lambda c: raw(c, c.request_headers(extra=[(":test", "ok")])))
bad_request("http2/8.1.2.1/2", "Sends a HEADERS frame that contains the pseudo-header field defined for response",
            lambda c: raw(c, c.request_headers(extra=[(":status", "200")])))
bad_request("http2/8.1.2.1/4", "Sends a HEADERS frame that contains a pseudo-header field that appears in a header block after a regular header field",
            lambda c: raw(c, c.request_headers()[:3] + [("x-test", "ok")] + c.request_headers()[3:]))
bad_request("http2/8.1.2.2/1", "Sends a HEADERS frame that contains the connection-specific header field",
            lambda c: raw(c, c.request_headers(extra=[("connection", "keep-alive")])))
bad_request("http2/8.1.2.2/2", "Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"",
            lambda c: raw(c, c.request_headers(extra=[("trailers", "test"), ("te", "trailers, deflate")])))
bad_request("http2/8.1.2.2/3", "Sends a HEADERS frame that contains the keep-alive header field",
            lambda c: raw(c, c.request_headers(extra=[("keep-alive", "timeout=5")])))
bad_request("http2/8.1.2.2/4", "Sends a HEADERS frame that contains the transfer-encoding header field",
            lambda c: raw(c, c.request_headers(extra=[("transfer-encoding", "chunked")])))
bad_request("http2/8.1.2.2/5", "Sends a HEADERS frame that contains the upgrade header field",
            lambda c: raw(c, c.request_headers(extra=[("upgrade", "websocket")])))
bad_request("http2/8.1.2.3/1", "Sends a HEADERS frame with empty \":path\" pseudo-header field",
            lambda c: raw(c, [(k, "" if k == ":path" else v) for k, v in c.request_headers()]))
bad_request("http2/8.1.2.3/2", "Sends a HEADERS frame that omits \":method\" pseudo-header field",
            lambda c: raw(c, [(k, v) for k, v in c.request_headers() if k != ":method"]))
bad_request("http2/8.1.2.3/3", "Sends a HEADERS frame that omits \":scheme\" pseudo-header field",
            lambda c: raw(c, [(k, v) for k, v in c.request_headers() if k != ":scheme"]))
bad_request("http2/8.1.2.3/4", "Sends a HEADERS frame that omits \":path\" pseudo-header field",
            lambda c: raw(c, [(k, v) for k, v in c.request_headers() if k != ":path"]))
bad_request("http2/8.1.2.3/5", "Sends a HEADERS frame with duplicated \":method\" pseudo-header field",
            lambda c: raw(c, c.request_headers()[:1] + c.request_headers()))
bad_request("http2/8.1.2.3/6", "Sends a HEADERS frame with duplicated \":scheme\" pseudo-header field",
            lambda c: raw(c, c.request_headers()[:2] + c.request_headers()[1:]))
bad_request("http2/8.1.2.3/7", "Sends a HEADERS frame with duplicated \":path\" pseudo-header field",
            lambda c: raw(c, c.request_headers()[:3] + c.request_headers()[2:]))
bad_request("http2/8.1.2.3/8", "Sends a HEADERS frame with a header field value that contains a newline (RFC 9113 8.2.1)",
            lambda c: raw(c, c.request_headers(extra=[("x-test", "a\r\nx-injected: 1")])))
bad_request("http2/8.1.2.3/9", "Sends a HEADERS frame with a header field name that contains a space (RFC 9113 8.2.1)",
            lambda c: raw(c, c.request_headers(extra=[("x test", "ok")])))


@case("http2/8.1.2.1/3", "Sends a HEADERS frame that contains a pseudo-header field as trailers")
def _(t):
    c = conn(t)
    c.send(c.headers_frame(1, method="POST", end_stream=False), frame(DATA, 0, 1, b"test"),
           frame(HEADERS, END_STREAM | END_HEADERS, 1, raw(c, [(":method", "POST")])))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/8.1.2.6/1", "Sends a HEADERS frame with the \"content-length\" header field which does not equal the DATA frame payload length")
def _(t):
    c = conn(t)
    c.send(frame(HEADERS, END_HEADERS, 1, raw(c, c.request_headers("POST", [("content-length", "1")]))),
           frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/8.1.2.6/2", "Sends a HEADERS frame with the \"content-length\" header field which does not equal the sum of the multiple DATA frames payload length")
def _(t):
    c = conn(t)
    c.send(frame(HEADERS, END_HEADERS, 1, raw(c, c.request_headers("POST", [("content-length", "1")]))),
           frame(DATA, 0, 1, b"test"), frame(DATA, END_STREAM, 1, b"test"))
    return expect_stream_error(c, 1, PROTOCOL_ERROR)


@case("http2/8.2/1", "Sends a PUSH_PROMISE frame")
def _(t):
    c = conn(t)
    c.send(frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block(c.request_headers())))
    return expect_connection_error(c, PROTOCOL_ERROR)


# hpack: RFC 7541.

def compression_error(cid, description, block_of):
    @case(cid, description)
    def _(t):
        c = conn(t)
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block_of(c)))
        return expect_connection_error(c, COMPRESSION_ERROR)


compression_error("hpack/2.3.3/1", "Sends a indexed header field representation with invalid index",
                  lambda c: raw(c, c.request_headers()) + hpack_int(70, 7, 0x80))
compression_error("hpack/2.3.3/2", "Sends a literal header field representation with invalid index",
                  lambda c: raw(c, c.request_headers()) + hpack_int(70, 6, 0x40) + b"\x02ok")
compression_error("hpack/4.2/1", "Sends a dynamic table size update at the end of header block",
                  lambda c: raw(c, c.request_headers()) + hpack_int(4096, 5, 0x20))
compression_error("hpack/5.2/1", "Sends a Huffman-encoded string literal representation with padding longer than 7 bits",
                  lambda c: raw(c, c.request_headers()) + literal("x-test", "", huffman_value=b"\x1f\xff"))
compression_error("hpack/5.2/2", "Sends a Huffman-encoded string literal representation padded by zero",
                  lambda c: raw(c, c.request_headers()) + literal("x-test", "", huffman_value=b"\x18"))
compression_error("hpack/5.2/3", "Sends a Huffman-encoded string literal representation containing the EOS symbol",
                  lambda c: raw(c, c.request_headers()) + literal("x-test", "", huffman_value=b"\xff\xff\xff\xff"))
compression_error("hpack/6.1/1", "Sends a indexed header field representation with index 0",
                  lambda c: raw(c, c.request_headers()) + b"\x80")
compression_error("hpack/6.3/1", "Sends a dynamic table size update larger than the value of SETTINGS_HEADER_TABLE_SIZE",
                  lambda c: hpack_int(4097, 5, 0x20) + raw(c, c.request_headers()))


# ---- runner -----------------------------------------------------------------------------------

def load_accepted(path):
    """Accepted failures: one per line, `CASE-ID  reason`; # starts a comment."""
    accepted = {}
    if not path:
        return accepted
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            cid, _, reason = line.partition(" ")
            accepted[cid] = reason.strip()
    return accepted


def run_case(t, fn):
    OPENED.clear()
    try:
        return True, fn(t)
    except Fail as e:
        return False, f"{e} (received: {received()})"
    except Exception as e:
        return False, f"{type(e).__name__}: {e} (received: {received()})"
    finally:
        for c in OPENED:
            c.sock.close()


def received():
    return "; ".join(" ".join(c.log) or "nothing" for c in OPENED)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (otherwise h2c prior knowledge)")
    p.add_argument("--authority", help=":authority of the requests (default host:port)")
    p.add_argument("--path", default="/", help="the request path (answers GET/HEAD/POST with a body)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for an answer")
    p.add_argument("--accepted", help="file of accepted failures")
    p.add_argument("--only", action="append", help="run the cases whose id starts with this (repeatable)")
    p.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    args = p.parse_args()
    t = Target(args)
    accepted = load_accepted(args.accepted)
    try:
        probe = Conn(t)
        probe.handshake()
        probe.sock.close()
    except Exception as e:  # no case can pass: say why once instead of 152 times
        print(f"FAIL     the server does not speak HTTP/2 here: {type(e).__name__}: {e}")
        if args.json:
            print(json.dumps({"total": 0, "passed": 0, "accepted": 0, "failed": ["handshake"], "stale": []}))
        sys.exit(1)
    results = []
    for cid, description, fn in CASES:
        if args.only and not any(cid.startswith(o) for o in args.only):
            continue
        ok, detail = run_case(t, fn)
        status = "PASS" if ok else ("ACCEPTED" if cid in accepted else "FAIL")
        results.append({"id": cid, "description": description, "status": status, "detail": detail})
        print(f"{status:8} {cid:16} {description}\n         -> {detail}"
              + (f"\n         accepted: {accepted[cid]}" if status == "ACCEPTED" else ""), flush=True)
    passed = sum(r["status"] == "PASS" for r in results)
    accepted_n = sum(r["status"] == "ACCEPTED" for r in results)
    failed = [r["id"] for r in results if r["status"] == "FAIL"]
    stale = sorted(cid for cid in accepted if any(r["id"] == cid and r["status"] == "PASS" for r in results))
    print(f"\n{len(results)} cases: {passed} passed, {accepted_n} accepted failures, {len(failed)} failed"
          + (f" ({' '.join(failed)})" if failed else ""))
    if stale:
        print(f"accepted but now passing (remove from the list): {' '.join(stale)}")
    if args.json:
        print(json.dumps({"total": len(results), "passed": passed, "accepted": accepted_n, "failed": failed,
                          "stale": stale}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
