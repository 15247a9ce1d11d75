#!/usr/bin/env python3
"""Times two shell commands side by side: A, B, A, B, ... RUNS times each (after one warm-up of
each), and prints one Markdown table row: the medians of A's and B's wall time and CPU time
(user + sys of the command and its children), and the ratio A/B of the medians.

    bench_pair.py WHAT RUNS 'COMMAND A' 'COMMAND B'

A command that exits non-zero stops the bench (a broken baseline measures nothing).
"""
import os
import resource
import statistics
import subprocess
import sys
import time


def once(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"bench_pair: {cmd!r} exited {r.returncode}: {r.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def fmt(s):
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.2f} s"


def main():
    what, runs, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    once(a)
    once(b)
    aw, ac, bw, bc = [], [], [], []
    for _ in range(runs):
        w, c = once(a)
        aw.append(w)
        ac.append(c)
        w, c = once(b)
        bw.append(w)
        bc.append(c)
    ma, mb = statistics.median(aw), statistics.median(bw)
    ca, cb = statistics.median(ac), statistics.median(bc)
    print(
        f"| {what} | {fmt(ma)} wall, {fmt(ca)} CPU | {fmt(mb)} wall, {fmt(cb)} CPU "
        f"| {ma / mb:.2f}x wall, {ca / max(cb, 1e-9):.2f}x CPU |",
        flush=True,
    )


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    main()
