#!/usr/bin/env python3
"""The Python equivalent of `tagfence plan` on a whole Service Tags file, for the speed comparison.

Reads the file with `json`, selects tags by case-insensitive name, keeps public IPv4 prefixes
(the same reserved ranges tagfence drops), collapses them with `ipaddress.collapse_addresses`,
writes /31s as two /32s (tagfence's default `--slash31 split`) and prints one rule per line.
Usage: plan_reference.py FILE TAG [TAG...]
"""
import ipaddress
import json
import sys

RESERVED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")]


def main():
    path, wanted = sys.argv[1], {t.lower() for t in sys.argv[2:]}
    with open(path, "rb") as f:
        doc = json.load(f)
    nets = []
    for tag in doc["values"]:
        if tag["name"].lower() in wanted:
            for prefix in tag["properties"]["addressPrefixes"]:
                net = ipaddress.ip_network(prefix)
                if net.version == 4 and not any(net.overlaps(r) for r in RESERVED):
                    nets.append(net)
    rules = []
    for net in ipaddress.collapse_addresses(nets):
        rules.extend(net.subnets(new_prefix=32) if net.prefixlen == 31 else [net])
    sys.stdout.write("".join(f"{r}\n" for r in rules))


if __name__ == "__main__":
    main()
