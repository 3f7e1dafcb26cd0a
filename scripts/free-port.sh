#!/usr/bin/env bash
# Prints N (default 1) distinct TCP ports that are free now on every address and lie above the
# kernel's ephemeral range, so that no outgoing connection of a test running meanwhile can
# take one of them before the server meant for it binds it (a fixed port inside the range was
# seen taken that way: "could not bind IPv4 address 0.0.0.0: Address already in use").
set -euo pipefail
exec python3 - "${1:-1}" <<'PY'
import random, socket, sys

wanted = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[1]) + 1
except OSError:
    low = 61000
ports = list(range(max(low, 1024), 65536))
random.shuffle(ports)
found = []
for port in ports:
    try:
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
    except OSError:
        continue
    found.append(port)
    if len(found) == wanted:
        print(" ".join(map(str, found)))
        sys.exit(0)
sys.exit("no free port above the ephemeral range")
PY
