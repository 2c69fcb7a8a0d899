#!/usr/bin/env python3
"""Redis commands per task, by caller, from a MONITOR capture of one benchmark run.

    REDIS_MONITOR=/tmp/mon.txt B=100 K=10 RETENTION_SECS=0 cargo bench -q -p gantry --bench scale
    python3 bench/monitor_by_script.py /tmp/mon.txt 1000      # 1000 = B*K tasks

Each EVALSHA is named by the shape of its KEYS (ids replaced by *), and the `lua` lines that follow it are
counted as that script's inner commands. The capture holds the whole run, the harness's own reads
(tenant setup, ZCARD/INFO while watching, HMGET/XRANGE at the end) included. MONITOR slows Redis a lot: never compare the timing of such a run.
"""
import collections
import re
import sys

path, tasks = sys.argv[1], float(sys.argv[2])
calls = collections.Counter()           # caller -> calls
inner = collections.defaultdict(collections.Counter)  # caller -> inner command -> count
current = None
TOKEN = re.compile(r'"((?:[^"\\\\]|\\\\.)*)"')
ID = re.compile(r"(bat|tsk|ten)_[0-9a-f_]+|\{p\d+\}|\{t:[^}]*\}|\{l:[^}]*\}")
for line in open(path, errors="replace"):
    m = re.match(r"^[\d.]+ \[\d+ ([^\]]+)\] (.*)$", line.rstrip("\n"))
    if not m:
        continue
    who, rest = m.groups()
    args = [a.replace('\\"', '"') for a in TOKEN.findall(rest)]
    if not args:
        continue
    cmd = args[0].upper().strip('"')
    if who == "lua":
        if current:
            inner[current][cmd] += 1
        continue
    if cmd in ("EVALSHA", "EVAL"):
        nkeys = int(args[2]) if len(args) > 2 and args[2].isdigit() else 0
        keys = [ID.sub("*", k).split(":", 1)[-1] for k in args[3:3 + nkeys]]
        current = "script(" + ",".join(keys) + ")"
        calls[current] += 1
    else:
        current = None
        calls[cmd] += 1
total = sum(calls.values()) + sum(sum(c.values()) for c in inner.values())
print(f"{total / tasks:.2f} commands/task, {sum(calls.values()) / tasks:.2f} requests/task")
for caller, n in calls.most_common():
    sub = inner.get(caller, {})
    detail = ", ".join(f"{c} {v / n:.1f}" for c, v in sorted(sub.items(), key=lambda kv: -kv[1]))
    print(f"{n / tasks:7.3f}/task  {caller}" + (f"  -> per call: {detail}" if detail else ""))
