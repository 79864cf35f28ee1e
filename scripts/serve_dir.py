#!/usr/bin/python3
"""A small static file server for demos (stdlib only).

Usage: serve_dir.py --root DIR [--port N] [--bind ADDR]
Listens on ADDR (default 127.0.0.1) port N (default 0: a free port), prints "PORT <n>" on stdout once
listening, then serves until killed (SIGINT/SIGTERM end it with status 0). GET and HEAD of /<path> answer
the file DIR/<path> with its Content-Type taken from the extension and a Content-Length; anything else
(missing files, directories, paths leaving DIR) is 404. HTTP/1.1 with keep-alive; no request log.
"""
import argparse
import mimetypes
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".gif": "image/gif", ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".csv": "text/csv; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8", ".json": "application/json",
    ".jsonl": "application/jsonl", ".gz": "application/gzip", ".tar": "application/x-tar",
}

CHUNK = 1 << 16


def content_type(path):
    ext = os.path.splitext(path)[1].lower()
    return TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


class Handler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes; with Nagle on, keep-alive clients stall ~40 ms per
    # response on delayed ACKs.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "serve_dir"
    root = "."

    def log_message(self, fmt, *args):  # quiet: callers read only the PORT line
        pass

    def _resolve(self):
        """The real path of the requested file under root, or None."""
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        if "\0" in rel:
            return None
        path = os.path.realpath(os.path.join(self.root, rel))
        if path != self.root and not path.startswith(self.root + os.sep):
            return None
        return path if os.path.isfile(path) else None

    def _not_found(self, head):
        body = b"not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head):
        path = self._resolve()
        if path is None:
            return self._not_found(head)
        try:
            f = open(path, "rb")
        except OSError:
            return self._not_found(head)
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if head:
                return
            while True:
                buf = f.read(CHUNK)
                if not buf:
                    break
                self.wfile.write(buf)

    def do_GET(self):
        try:
            self._serve(False)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_HEAD(self):
        try:
            self._serve(True)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _stop(signum, frame):
    raise KeyboardInterrupt  # unwinds serve_forever in the main thread so the socket is closed


def main(argv=None):
    ap = argparse.ArgumentParser(description="Serve the files of a directory over HTTP (demo use).")
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.root):
        print("serve_dir.py: %s: not a directory" % a.root, file=sys.stderr)
        return 2
    Handler.root = os.path.realpath(a.root)
    ThreadingHTTPServer.daemon_threads = True
    try:
        srv = ThreadingHTTPServer((a.bind, a.port), Handler)
    except OSError as e:
        print("serve_dir.py: cannot listen on %s:%d: %s" % (a.bind, a.port, e), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
