#!/usr/bin/env python3
"""Writes the order in which the release binary's functions are laid out (lld's
--symbol-ordering-file, read by jobpack-server/build.rs): the functions the server runs as it
starts first, then those a job runs through the server, then those of `jobpack run` and
`jobpack pack`; every other function stays where the compiler put it, after them.

    link_order.py BINARY OUT
    link_order.py --check BINARY LIST     how many of LIST's functions BINARY has (bench.sh)

Run it as root through scripts/link-order.sh, which builds the binary first. What a process runs
is seen in the page cache: with the disk's readahead off and the binary's pages dropped, a page of
code is read only when some process executes it (the kernel's fault-around maps pages already
cached, never reads more), so the binary's cached pages after each step are the pages run so far.
A function is taken when it overlaps a page that was run: a page holds several functions, so the
lists are a superset of what ran, at 4 KiB granularity.
"""
import ctypes
import json
import mmap
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PAGE = 4096
libc = ctypes.CDLL(None, use_errno=True)


def block_device_readahead(path):
    """The sysfs file of the read-ahead of the disk `path` is on (a partition's disk)."""
    dev = os.stat(path).st_dev
    sys_dev = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for d in (sys_dev, os.path.dirname(sys_dev)):
        ra = os.path.join(d, "queue", "read_ahead_kb")
        if os.path.exists(ra):
            return ra
    sys.exit(f"link_order: no read_ahead_kb for the disk of {path} ({sys_dev})")


def text_range(binary):
    """(file offset, size, vaddr - offset) of the executable LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and f[-2] == "E" and f[-3] == "R":
            off, vaddr, size = int(f[1], 16), int(f[2], 16), int(f[5], 16)
            return off, size, vaddr - off
    sys.exit("link_order: no executable segment in " + binary)


def cached_pages(binary):
    """The set of the file's page numbers in the page cache (mincore of a mapping never touched)."""
    size = os.path.getsize(binary)
    n = (size + PAGE - 1) // PAGE
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(binary, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            sys.exit(f"link_order: mmap: {os.strerror(ctypes.get_errno())}")
        vec = (ctypes.c_ubyte * n)()
        rc = libc.mincore(addr, size, vec)
        libc.munmap(addr, size)
        if rc != 0:
            sys.exit(f"link_order: mincore: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return {i for i in range(n) if vec[i] & 1}


def drop(binary, first, last):
    """Drops the binary's pages from the page cache (written first: dirty pages stay)."""
    fd = os.open(binary, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    left = sum(first <= p <= last for p in cached_pages(binary))
    if left:
        sys.exit(f"link_order: {left} pages of {binary}'s code stay cached (is it running?)")


def functions(binary):
    """(vaddr, size, name) of every function with a size, from the symbol table."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                         check=True)
    fns = []
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTW":
            fns.append((int(f[0], 16), int(f[1], 16), f[3]))
    return fns


def serve_and_submit(binary, data, jobs):
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
                          "--auth", "none"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        url = None
        for line in p.stdout:
            m = re.search(r"jobpack listening on (\S+)", line)
            if m:
                url = m.group(1).rstrip("/")
                break
        if url is None:
            sys.exit("link_order: the server did not start")
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
        time.sleep(3)
        yield "start"
        op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        final = {"completed", "failed", "stopped", "timed_out", "oom_killed", "limit_exceeded"}
        late = []

        def one(body):
            req = urllib.request.Request(url + "/v1/jobs", data=body,
                                         headers={"Content-Type": "application/json"})
            jid = json.load(op.open(req))["job_id"]
            deadline = time.monotonic() + 60
            while json.load(op.open(url + "/v1/jobs/" + jid))["status"] not in final:
                if time.monotonic() > deadline:
                    late.append(jid)
                    return
                time.sleep(0.005)
            op.open(url + "/v1/jobs/" + jid + "/logs").read()

        bodies = [b'{"command":"true"}', b'{"command":"echo hello; exit 3"}',
                  b'{"command":["sh","-c","echo argv"]}']
        threads = [threading.Thread(target=lambda b=b: [one(b) for _ in range(jobs)])
                   for b in bodies]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if late:
            sys.exit(f"link_order: jobs {late} did not end within 60 s")
        op.open(url + "/v1/jobs?limit=100").read()
        yield "jobs"
    finally:
        p.terminate()
        p.wait()


def check(binary, listed):
    names = [n for n in (l.split("#")[0].strip() for l in open(listed)) if n]
    have = {name for _, _, name in functions(binary)}
    found = sum(n in have for n in names)
    print(f"code layout: {found} of the {len(names)} functions {listed} lists are in the binary"
          + ("" if found * 10 >= len(names) * 9 else
             " (stale: run scripts/link-order.sh as root)"))


def main():
    if sys.argv[1] == "--check":
        return check(sys.argv[2], sys.argv[3])
    binary, out = sys.argv[1], sys.argv[2]
    off, size, delta = text_range(binary)
    first, last = off // PAGE, (off + size - 1) // PAGE
    fns = functions(binary)
    ra = block_device_readahead(binary)
    saved = open(ra).read().strip()
    steps = {}
    seen = set()
    tmp = tempfile.mkdtemp(prefix="jobpack-link-order.")
    try:
        open(ra, "w").write("0")
        drop(binary, first, last)

        def note(step):
            now = {p for p in cached_pages(binary) if first <= p <= last}
            steps[step] = now - seen
            seen.update(now)

        for step in serve_and_submit(binary, os.path.join(tmp, "data"), 20):
            note(step)
        code = os.path.join(tmp, "code")
        os.makedirs(code)
        with open(os.path.join(tmp, "true.yaml"), "w") as f:
            f.write('command: "true"\n')
        art = os.path.join(tmp, "true.tar.gz")
        subprocess.run([binary, "pack", os.path.join(tmp, "true.yaml"), "--code", code, "-o", art,
                        "--no-cache"], check=True, capture_output=True)
        for _ in range(3):
            subprocess.run([binary, "run", art], check=True, capture_output=True)
        note("cli")
    finally:
        open(ra, "w").write(saved)
        subprocess.run(["rm", "-rf", tmp], check=False)

    placed = set()
    lines = []
    for step in ("start", "jobs", "cli"):
        pages = steps[step]
        names = []
        for vaddr, sz, name in sorted(fns):
            o = vaddr - delta
            if name in placed or sz == 0:
                continue
            if any(p in pages for p in range(o // PAGE, (o + sz - 1) // PAGE + 1)):
                names.append(name)
                placed.add(name)
        lines.append(f"# {step}: {len(names)} functions on {len(pages)} pages run")
        lines.extend(names)
        print(f"link_order: {step}: {len(pages)} pages of code run, {len(names)} functions",
              file=sys.stderr)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
