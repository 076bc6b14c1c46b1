#!/usr/bin/env python3
"""Submits N announcements over T keep-alive connections and prints the rate.

Usage: accept_load.py BASE_URL TOKEN N T   (loopback only)
"""
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

base, token, n, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
url = urlparse(base)
codes = {}
lock = threading.Lock()


def worker(k):
    c = http.client.HTTPConnection(url.hostname, url.port)
    for i in range(n // t):
        body = json.dumps({"title": f"お知らせ {k}-{i}", "body": "本文です。"})
        c.request("POST", "/api/v1/announcements", body,
                  {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        with lock:
            codes[r.status] = codes.get(r.status, 0) + 1


start = time.time()
threads = [threading.Thread(target=worker, args=(k,)) for k in range(t)]
for th in threads:
    th.start()
for th in threads:
    th.join()
elapsed = time.time() - start
done = sum(codes.values())
print(f"{done} announcements in {elapsed:.2f} s: {done / elapsed:.0f} accepted/s "
      f"(answers {codes}; each durable before its 202)")
