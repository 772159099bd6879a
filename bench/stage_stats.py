#!/usr/bin/env python3
"""Percentiles of hubd's stage histograms (HUBD_STAGE_STATS) over a window.

    bench/stage_stats.py BEFORE AFTER   (two snapshots of the file; counts of AFTER minus BEFORE)
    bench/stage_stats.py FILE           (everything since hubd started)
"""
import collections
import sys


def load(path):
    h = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            name, bucket, n = line.split()
            h[name][int(bucket)] += int(n)
    return h


after = load(sys.argv[-1])
before = load(sys.argv[1]) if len(sys.argv) > 2 else collections.defaultdict(collections.Counter)
order = ["log_queue_wait", "log_write", "log_fdatasync", "log_callbacks", "completion_post", "puback_write",
         "server_total", "log_records"]
print(f"{'stage':16} {'n':>9} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}  (µs; log_records: records)")
for name in order:
    c = after[name] - before[name]
    n = sum(c.values())
    if n == 0:
        continue
    items = sorted(c.items())
    mean = sum(b * k for b, k in items) / n

    def pct(q):
        want, seen = q * n, 0
        for b, k in items:
            seen += k
            if seen > want:
                return b
        return items[-1][0]

    print(f"{name:16} {n:9} {mean:8.0f} {pct(0.5):8} {pct(0.9):8} {pct(0.99):8} {pct(0.999):8} {items[-1][0]:8}")
