#!/usr/bin/python3
"""Fault-injecting HTTP test server for lvd's fetch engine and crawler tests (stdlib only).

Usage: server.py [--root DIR] [--bind ADDR] [--robots FILE]
Binds ADDR (default 127.0.0.1) on a free port, prints "PORT <n>" on stdout, then serves until killed.

Routes (GET; HEAD answers the same headers):
  /png                      a small fixed PNG
  /files/<name>[?type=T]    a file of --root, Content-Type T or guessed from the extension
  /status/<code>            that status with a short text body
  /flaky/<id>?fail=K        the first K requests for <id> get 500, later ones the PNG
  /ratelimit/<id>?after=S[&date=1]
                            the first request for <id> gets 429 with Retry-After: S (seconds, or an HTTP date
                            S seconds ahead with date=1), later ones the PNG
  /slow                     headers, then 1 byte per second until the client goes away
  /big?n=BYTES&cl=0|1       n bytes, with (cl=1, default) or without Content-Length
  /redirect/<n>             302 to /redirect/<n-1> (n=2 uses an absolute URL); /redirect/0 is the PNG
  /to?url=U[&code=C]        a redirect (default 302) to U, which may be relative
  /loop                     302 to itself
  /tofile                   302 to file:///etc/passwd
  /noai                     X-Robots-Tag: noai and the PNG
  /xrobots?v=VALUE[&v=...]  one X-Robots-Tag header line per v, and the PNG
  /private/<anything>       the PNG (robots.txt disallows it)
  /robots.txt               "User-agent: *\\nDisallow: /private/\\n", or the --robots file
  /empty                    200 with an empty body
  /hang                     reads the request and never answers
  /delay/<ms>               the PNG after ms milliseconds
  /counter                  JSON {"counts": {path: n}, "max_concurrent": {host: n}, "total": n}, where path
                            excludes the query and host is the Host header
  /counter?path=P           requests made for path P, as plain text
  /counter?max=HOST         highest number of concurrent requests with Host: HOST, as plain text
  /counter/reset            clears the counters (not counted itself)
"""
import argparse
import email.utils
import json
import mimetypes
import os
import select
import socket
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


def make_png(w=4, h=3):
    """An RGB PNG of w x h pixels, built by hand so the server needs nothing outside the stdlib."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    rows = []
    for y in range(h):
        px = b"".join(bytes(((x * 60) % 256, (y * 80) % 256, 200)) for x in range(w))
        rows.append(b"\x00" + px)  # filter type 0 per scanline
    raw = b"".join(rows)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


PNG = make_png()
DEFAULT_ROBOTS = b"User-agent: *\nDisallow: /private/\n"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}          # path -> requests
        self.by_id = {}           # (route, id) -> requests
        self.current = {}         # Host header -> requests being served
        self.max_concurrent = {}  # Host header -> highest value of current
        self.total = 0

    def reset(self):
        with self.lock:
            self.counts.clear()
            self.by_id.clear()
            self.max_concurrent.clear()
            self.total = 0

    def enter(self, path, host):
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            self.total += 1
            cur = self.current.get(host, 0) + 1
            self.current[host] = cur
            if cur > self.max_concurrent.get(host, 0):
                self.max_concurrent[host] = cur

    def leave(self, host):
        with self.lock:
            self.current[host] = self.current.get(host, 1) - 1

    def bump(self, route, ident):
        with self.lock:
            n = self.by_id.get((route, ident), 0) + 1
            self.by_id[(route, ident)] = n
            return n

    def snapshot(self):
        with self.lock:
            return {"counts": dict(self.counts), "max_concurrent": dict(self.max_concurrent),
                    "total": self.total}


STATE = State()


def client_gone(sock, wait):
    """True if the peer closed the connection within `wait` seconds."""
    try:
        r, _, _ = select.select([sock], [], [], wait)
        if not r:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes; with Nagle on, keep-alive clients stall ~40 ms per
    # response on delayed ACKs.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "lvd-test-server/1"

    def log_message(self, fmt, *args):  # quiet: tests read only the PORT line
        pass

    def send_body(self, code, body, ctype="application/octet-stream", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_png(self, headers=()):
        self.send_body(200, PNG, "image/png", headers)

    def redirect(self, location, code=302):
        self.send_body(code, b"moved\n", "text/plain", [("Location", location)])

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        if path == "/counter/reset":
            STATE.reset()
            self.send_body(200, b"{}", "application/json")
            return
        if path == "/counter":
            snap = STATE.snapshot()
            if "path" in query:  # plain-text forms, easy to read from C
                n = snap["counts"].get(query["path"][0], 0)
                self.send_body(200, b"%d\n" % n, "text/plain")
            elif "max" in query:
                n = snap["max_concurrent"].get(query["max"][0], 0)
                self.send_body(200, b"%d\n" % n, "text/plain")
            else:
                self.send_body(200, json.dumps(snap).encode(), "application/json")
            return
        host = self.headers.get("Host", "")
        STATE.enter(path, host)
        try:
            self.route(path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            STATE.leave(host)

    def qint(self, query, name, default):
        try:
            return int(query.get(name, [str(default)])[0])
        except ValueError:
            return default

    def route(self, path, query):
        seg = path.strip("/").split("/")
        head = seg[0] if seg else ""
        if path == "/png":
            self.send_png()
        elif path == "/robots.txt":
            self.send_body(200, self.server.robots, "text/plain")
        elif head == "files" and len(seg) == 2 and self.server.root:
            name = seg[1]
            full = os.path.join(self.server.root, name)
            if name in ("", ".", "..") or not os.path.isfile(full):
                self.send_body(404, b"no such file\n", "text/plain")
                return
            with open(full, "rb") as f:
                data = f.read()
            ctype = query.get("type", [None])[0] or mimetypes.guess_type(name)[0] or "application/octet-stream"
            self.send_body(200, data, ctype)
        elif head == "status" and len(seg) == 2 and seg[1].isdigit():
            code = int(seg[1])
            self.send_body(code, b"status %d\n" % code, "text/plain")
        elif head == "flaky" and len(seg) == 2:
            n = STATE.bump("flaky", seg[1])
            if n <= self.qint(query, "fail", 1):
                self.send_body(500, b"try again\n", "text/plain")
            else:
                self.send_png()
        elif head == "ratelimit" and len(seg) == 2:
            n = STATE.bump("ratelimit", seg[1])
            if n == 1:
                after = self.qint(query, "after", 1)
                if query.get("date", ["0"])[0] == "1":
                    value = email.utils.formatdate(time.time() + after, usegmt=True)
                else:
                    value = str(after)
                self.send_body(429, b"slow down\n", "text/plain", [("Retry-After", value)])
            else:
                self.send_png()
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(600):
                self.wfile.write(b"x")
                self.wfile.flush()
                if client_gone(self.connection, 1.0):
                    break
            self.close_connection = True
        elif path == "/big":
            n = max(0, self.qint(query, "n", 0))
            with_cl = self.qint(query, "cl", 1) != 0
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if with_cl:
                self.send_header("Content-Length", str(n))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            block = b"\xab" * 65536
            left = n
            while left > 0:
                k = min(left, len(block))
                self.wfile.write(block[:k])
                left -= k
        elif head == "redirect" and len(seg) == 2 and seg[1].isdigit():
            n = int(seg[1])
            if n <= 0:
                self.send_png()
            elif n == 2:
                self.redirect("http://%s/redirect/1" % self.headers.get("Host", ""))
            else:
                self.redirect("/redirect/%d" % (n - 1))
        elif path == "/to":
            self.redirect(query.get("url", ["/png"])[0], self.qint(query, "code", 302))
        elif path == "/loop":
            self.redirect("/loop")
        elif path == "/tofile":
            self.redirect("file:///etc/passwd")
        elif path == "/noai":
            self.send_png([("X-Robots-Tag", "noai")])
        elif path == "/xrobots":
            self.send_png([("X-Robots-Tag", v) for v in query.get("v", [])])
        elif head == "private":
            self.send_png()
        elif path == "/empty":
            self.send_body(200, b"", "image/png")
        elif path == "/hang":
            while not client_gone(self.connection, 1.0):
                pass
            self.close_connection = True
        elif head == "delay" and len(seg) == 2 and seg[1].isdigit():
            time.sleep(int(seg[1]) / 1000.0)
            self.send_png()
        else:
            self.send_body(404, b"not found\n", "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # clients that give up (timeouts, aborted bodies) are part of the tests, not server errors
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="fault-injecting HTTP test server")
    ap.add_argument("--root", help="directory served under /files/")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--robots", help="file served as /robots.txt")
    args = ap.parse_args()
    srv = Server((args.bind, 0), Handler)
    srv.root = args.root
    srv.robots = DEFAULT_ROBOTS
    if args.robots:
        with open(args.robots, "rb") as f:
            srv.robots = f.read()
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
