#!/usr/bin/env python3
"""Measures `tagfence serve` as the Functions host sees it: time from process start to the first
answer on `GET /` (the host's readiness probe), and the worker's resident memory when idle.

Each run starts the release binary with the host's environment and typical app settings (three
vaults, the AzureDevOps tag, a loopback ARM endpoint; nothing is invoked), polls `GET /` every
millisecond, then waits for the warm-up (credential and HTTP clients are built right after the
port is bound) and reads VmRSS from /proc. Prints the median and the worst of N runs.

Usage: scripts/bench_serve.py [--runs N] [--no-build]
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAULT = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-{}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(binary):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
        "FUNCTIONS_WORKER_RUNTIME": "custom",
        "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token",
        "IDENTITY_HEADER": "bench",
        "TAGFENCE_ARM_ENDPOINT": "http://127.0.0.1:9",
        "TAGFENCE_VAULTS": ",".join(VAULT.format(n) for n in ("a", "b", "c")),
        "TAGFENCE_TAGS": "AzureDevOps",
    }
    started = time.perf_counter()
    process = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                ready = time.perf_counter() - started
                break
            except OSError:
                if process.poll() is not None:
                    raise SystemExit(f"tagfence serve exited with {process.returncode}")
                time.sleep(0.001)
        time.sleep(1.0)  # idle, after the warm-up
        rss = rss_kib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    return ready, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "tagfence"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/tagfence")
    runs = [one_run(binary) for _ in range(args.runs)]
    ready = sorted(r[0] * 1000 for r in runs)
    rss = sorted(r[1] / 1024 for r in runs)
    print(f"{args.runs} starts of {binary}")
    print(f"start to first GET / answer: median {statistics.median(ready):.1f} ms, worst {ready[-1]:.1f} ms")
    print(f"idle RSS after warm-up:      median {statistics.median(rss):.1f} MiB, worst {rss[-1]:.1f} MiB")


if __name__ == "__main__":
    main()
