#!/usr/bin/env python3
"""Times `tagfence plan` on a whole Service Tags file against the equivalent Python script.

For each selection it first checks that both produce the same rules, then runs the two
commands alternately (so that machine noise hits both alike), N times each, and prints the
median wall time of each and their ratio. Each run is a fresh process, timed from before
spawn to after exit, as a person or a pipeline would run it.

What is compared: the Python script collapses the selected prefixes losslessly, whatever their
number. tagfence plans for a Key Vault, whose firewall holds at most 1,000 rules, and refuses
`--max-rules` above that, so it runs with `--max-rules 1000`: with the default exact fit when the
lossless rules fit (the two must then give the same rules), and with `--fit summarize` when they
do not (the nine US regions, the global AzureCloud tag). A summarized plan must cover every address
of the Python rules with at most 1,000 rules, and the extra addresses it reports must be exactly
the addresses it covers beyond them; its time includes that fit, which the Python side does not do,
so for those selections the ratio understates tagfence's speed at the same work. The table's rules
column then shows both counts (lossless → fitted).

Python is run as this interpreter's own executable (sys.executable), not through a launcher
such as a pyenv shim, which would add its own start-up time to Python's side.

Usage: scripts/compare_plan.py [--runs N] [--no-build] [--fixture PATH]
"""
import argparse
import gzip
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Key Vault's limit on IP rules per vault; tagfence refuses a larger --max-rules.
MAX_RULES = 1000
US = ["AzureCloud." + r for r in ("eastus", "eastus2", "centralus", "northcentralus", "southcentralus",
                                  "westcentralus", "westus", "westus2", "westus3")]
SELECTIONS = [
    ("AzureDevOps", ["AzureDevOps"]),
    ("Europe (2 regions)", ["AzureCloud.westeurope", "AzureCloud.northeurope"]),
    ("US (9 regions)", US),
    ("AzureCloud (global)", ["AzureCloud"]),
]


def check_summary(label, rules, lossless, extra):
    """A summarized fit: at most MAX_RULES rules covering every lossless address, `extra` more."""
    fitted = [ipaddress.ip_network(r) for r in rules]
    exact = [ipaddress.ip_network(r) for r in lossless]
    covered = list(ipaddress.collapse_addresses(fitted))
    if len(rules) > MAX_RULES:
        sys.exit(f"{label}: tagfence's summarized plan has {len(rules):,} rules, over {MAX_RULES:,}")
    if list(ipaddress.collapse_addresses(covered + exact)) != covered:
        sys.exit(f"{label}: tagfence's summarized plan leaves out addresses the Python script selects")
    size = sum(n.num_addresses for n in covered) - sum(n.num_addresses for n in exact)
    if size != extra:
        sys.exit(f"{label}: tagfence reports {extra:,} extra addresses, but its rules cover {size:,} more")


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
            theirs = [sys.executable, reference, path] + tags
            expected = subprocess.run(theirs, capture_output=True, check=True, text=True).stdout.split()
            fit = "exact" if len(expected) <= MAX_RULES else "summarize"
            ours = [binary, "plan", "--service-tags", path, "--max-rules", str(MAX_RULES), "--fit", fit]
            for tag in tags:
                ours += ["--tag", tag]

            # Same answer first.
            plan = json.loads(subprocess.run(ours + ["--output", "json"], capture_output=True, check=True).stdout)
            rules = plan["desired"]["rules"]
            if fit == "exact" and rules != expected:
                sys.exit(f"{label}: tagfence and the Python script disagree on the rules")
            if fit == "summarize":
                check_summary(label, rules, expected, plan["desired"]["extra_addresses"])
            count = f"{len(expected):,}" if fit == "exact" else f"{len(expected):,} → {len(rules):,}"

            ours_times, theirs_times = [], []
            for _ in range(args.runs):
                ours_times.append(timed(ours))
                theirs_times.append(timed(theirs))
            a, b = statistics.median(ours_times), statistics.median(theirs_times)
            print(f"| {label} | {count} | {a * 1000:.2f} ms | {b * 1000:.2f} ms | {b / a:.1f}x |")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
