#!/usr/bin/env python3
"""A webhook receiver for rough latency runs: answers 200 to every POST and appends the
arrival time (Unix seconds, float) and the body's title to a file.

Usage: webhook_receiver.py PORT LOG_FILE   (loopback only)
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            title = json.loads(body).get("title", "")
        except ValueError:
            title = ""
        with open(log_path, "a") as f:
            f.write(f"{arrived} {title}\n")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id":"ok"}')

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
