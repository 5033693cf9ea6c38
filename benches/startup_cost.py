#!/usr/bin/env python3
"""Cold start to the first acknowledged event: a big log set vs an empty one.

Builds a log set of N records with the real daemon (flush = "none", 64 MiB
rotation), then starts `nxauditd` on it and on an empty directory, in
alternation, and times each start until the first event is acknowledged.
Prints both medians and their ratio (the costs that must not grow with the
log: target <= 3x).

    cargo build --release
    benches/startup_cost.py --records 2900000 --runs 5
    NXAUDITD=/path/to/other/nxauditd benches/startup_cost.py ...   # another build
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON = os.environ.get("NXAUDITD", os.path.join(ROOT, "target/release/nxauditd"))
CONF = """[log]
flush = "{flush}"
rotate_size = "64MiB"
compress = "zstd"
[journal]
enabled = false
[auth]
source = "off"
[forward]
enabled = false
"""


def start(base, flush):
    os.makedirs(base, mode=0o750, exist_ok=True)
    with open(os.path.join(base, "nxauditd.toml"), "w") as f:
        f.write(CONF.format(flush=flush))
    return subprocess.Popen(
        [DAEMON, "--base-dir", base, "--config", os.path.join(base, "nxauditd.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_ack(base, t0, timeout=60):
    path = os.path.join(base, "audit.sock")
    while time.perf_counter() - t0 < timeout:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(b'{"code":50000,"user":"bench"}\n')
            reply = s.makefile().readline()
            s.close()
            if json.loads(reply).get("ok"):
                return time.perf_counter() - t0
        except (OSError, ValueError):
            pass
        time.sleep(0.0005)
    raise SystemExit("no ack within %ss" % timeout)


def fill(base, n):
    p = start(base, "none")
    first_ack(base, time.perf_counter())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(base, "audit.sock"))
    line = b'{"code":20206,"user":"alice","details":{"name":"Auditors"},"id":"%d"}\n'
    r = s.makefile("rb")
    batch = 2000
    for i in range(0, n, batch):
        s.sendall(b"".join(line % j for j in range(i, min(n, i + batch))))
        for _ in range(min(n, i + batch) - i):
            r.readline()
    s.close()
    p.send_signal(signal.SIGTERM)
    p.wait()


def timed_start(base):
    t0 = time.perf_counter()
    p = start(base, "sync")
    t = first_ack(base, t0)
    p.send_signal(signal.SIGTERM)
    p.wait()
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_900_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="use (or fill, if empty) the log set here; kept")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="nxaudit-startup-")
    big = a.dir or os.path.join(work, "big")
    if not os.path.isdir(os.path.join(big, "log")):
        fill(big, a.records)
    sizes = sum(os.path.getsize(os.path.join(big, "log", f)) for f in os.listdir(os.path.join(big, "log")))
    print(f"log set: {len(os.listdir(os.path.join(big, 'log')))} files, {sizes / 1e6:.0f} MB on disk")
    tb, te = [], []
    for _ in range(a.runs):
        empty = os.path.join(work, "empty")
        shutil.rmtree(empty, ignore_errors=True)
        te.append(timed_start(empty))
        tb.append(timed_start(big))
    mb, me = statistics.median(tb), statistics.median(te)
    print(f"empty: median {me*1000:.1f} ms  {[round(x*1000,1) for x in te]}")
    print(f"big:   median {mb*1000:.1f} ms  {[round(x*1000,1) for x in tb]}")
    print(f"ratio big/empty: {mb/me:.2f}x (target <= 3x)")
    if not a.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
