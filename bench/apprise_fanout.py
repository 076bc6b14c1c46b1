#!/usr/bin/env python3
"""The peer's side of the benchmark: Apprise sends one announcement by email to COUNT
recipients (r0@example.jp ... r{COUNT-1}@example.jp), one message per recipient, to an SMTP
server on 127.0.0.1 over plain SMTP (mailto://, so Apprise's insecure mode: no TLS, no AUTH).
One notify() call with every recipient in `to=`, which Apprise sends over one SMTP session:
its fastest way.

Prints one JSON line: {"apprise": version, "ok": bool, "count": n, "wall_s": s, "cpu_s": s}
where wall and CPU (user + system of this process) cover the notify() call only, not
Python's start or Apprise's import. Run by noroshi-bench (`apprise` / `all`).

Usage: apprise_fanout.py --port PORT --count N --from ADDR --title T --body B
"""
import argparse
import json
import resource
import time
import urllib.parse

import apprise

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--count", type=int, required=True)
p.add_argument("--from", dest="sender", required=True)
p.add_argument("--title", required=True)
p.add_argument("--body", required=True)
a = p.parse_args()

to = ",".join(f"r{i}@example.jp" for i in range(a.count))
query = urllib.parse.urlencode(
    {"smtp": "127.0.0.1", "port": a.port, "from": a.sender, "to": to, "format": "text"}
)
ap = apprise.Apprise()
if not ap.add(f"mailto://city.example.jp?{query}"):
    raise SystemExit("Apprise refused the mailto:// URL")


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


cpu0, t0 = cpu(), time.perf_counter()
ok = ap.notify(title=a.title, body=a.body)
wall, used = time.perf_counter() - t0, cpu() - cpu0
print(json.dumps({"apprise": apprise.__version__, "ok": bool(ok), "count": a.count,
                  "wall_s": wall, "cpu_s": used}))
