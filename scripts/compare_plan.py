#!/usr/bin/env python3
"""Times `tagfence plan` on a whole Service Tags file against the equivalent Python script.

For each selection it first checks that both produce the same rules, then runs the two
commands alternately (so that machine noise hits both alike), N times each, and prints the
median wall time of each and their ratio. Each run is a fresh process, timed from before
spawn to after exit, as a person or a pipeline would run it.

Python is run as this interpreter's own executable (sys.executable), not through a launcher
such as a pyenv shim, which would add its own start-up time to Python's side.

Usage: scripts/compare_plan.py [--runs N] [--no-build] [--fixture PATH]
"""
import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
US = ["AzureCloud." + r for r in ("eastus", "eastus2", "centralus", "northcentralus", "southcentralus",
                                  "westcentralus", "westus", "westus2", "westus3")]
SELECTIONS = [
    ("AzureDevOps", ["AzureDevOps"]),
    ("Europe (2 regions)", ["AzureCloud.westeurope", "AzureCloud.northeurope"]),
    ("US (9 regions)", US),
    ("AzureCloud (global)", ["AzureCloud"]),
]


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--fixture", default=os.path.join(ROOT, "tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz"))
    args = parser.parse_args()

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tagfence"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/tagfence")
    reference = os.path.join(ROOT, "scripts/plan_reference.py")

    tmp = tempfile.mkdtemp(prefix="tagfence-compare-")
    try:
        # Both read the same uncompressed file (the format Microsoft publishes).
        path = os.path.join(tmp, "ServiceTags_Public.json")
        with gzip.open(args.fixture, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        size = os.path.getsize(path)
        print(f"file: {os.path.basename(args.fixture)} ({size:,} bytes uncompressed); {args.runs} runs each, alternating")
        print(f"python: {sys.executable} ({sys.version.split()[0]})")
        print()
        print(f"| selection | rules | tagfence plan (median) | python (median) | ratio |")
        print(f"|---|---:|---:|---:|---:|")
        for label, tags in SELECTIONS:
            ours = [binary, "plan", "--service-tags", path, "--max-rules", "100000"]
            for tag in tags:
                ours += ["--tag", tag]
            theirs = [sys.executable, reference, path] + tags

            # Same answer first.
            plan = json.loads(subprocess.run(ours + ["--output", "json"], capture_output=True, check=True).stdout)
            expected = subprocess.run(theirs, capture_output=True, check=True, text=True).stdout.split()
            if plan["desired"]["rules"] != expected:
                sys.exit(f"{label}: tagfence and the Python script disagree on the rules")

            ours_times, theirs_times = [], []
            for _ in range(args.runs):
                ours_times.append(timed(ours))
                theirs_times.append(timed(theirs))
            a, b = statistics.median(ours_times), statistics.median(theirs_times)
            print(f"| {label} | {len(expected):,} | {a * 1000:.2f} ms | {b * 1000:.2f} ms | {b / a:.1f}x |")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
