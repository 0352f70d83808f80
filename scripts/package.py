#!/usr/bin/env python3
"""Builds the deployable Azure Functions package: target/package/tagfence-functions.zip.

The zip holds the app root the Functions host expects (Microsoft Learn, "Azure Functions custom
handlers"): host.json, one folder per function with its function.json, and the `tagfence` Linux
x86_64 binary with its run bit set (zips made on Windows lose it: azure-functions-core-tools#2510,
so the bit is set here explicitly). The binary is a static musl build when the musl target and
musl-gcc are installed, else a glibc build (which needs glibc 2.36 or newer on the host, as on
Debian 12).

Usage: scripts/package.py [--out PATH]
"""
import argparse
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCTIONS = ["function-timer", "function-http", "function-eventgrid", "function-grant", "function-sweep"]
MUSL = "x86_64-unknown-linux-musl"


def musl_available():
    installed = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True)
    return MUSL in installed.stdout.split() and shutil.which("musl-gcc") is not None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "target/package/tagfence-functions.zip"))
    args = parser.parse_args()

    command = ["cargo", "build", "--release", "--locked", "--bin", "tagfence"]
    if musl_available():
        command += ["--target", MUSL]
        binary = os.path.join(ROOT, "target", MUSL, "release", "tagfence")
        kind = "static musl"
    else:
        binary = os.path.join(ROOT, "target/release/tagfence")
        kind = "glibc (musl target or musl-gcc not installed)"
    subprocess.run(command, cwd=ROOT, check=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    entries = [("host.json", os.path.join(ROOT, "host.json"), 0o644)]
    for function in FUNCTIONS:
        entries.append((f"{function}/function.json", os.path.join(ROOT, function, "function.json"), 0o644))
    entries.append(("tagfence", binary, 0o755))

    tmp = args.out + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path, mode in entries:
            info = zipfile.ZipInfo.from_file(path, arcname=name)
            # Unix permissions in the upper 16 bits; the "made on Unix" marker makes unzip and
            # the Functions deployment honour them.
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as source:
                archive.writestr(info, source.read())
    os.replace(tmp, args.out)

    with zipfile.ZipFile(args.out) as archive:
        for info in archive.infolist():
            print(f"{(info.external_attr >> 16) & 0o777:o}  {info.file_size:>10,}  {info.filename}")
    print(f"{args.out}: {os.path.getsize(args.out):,} bytes; binary: {kind}")


if __name__ == "__main__":
    sys.exit(main())
