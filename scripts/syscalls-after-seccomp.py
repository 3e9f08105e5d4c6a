#!/usr/bin/env python3
"""Counts the system calls each process in an `strace -f` trace made after it loaded a seccomp
filter, and the calls the filter trapped. Used to measure a sandbox policy (docs/sandbox.md)."""
import collections
import re
import sys

confined = set()
calls = collections.Counter()
trapped = collections.Counter()
for line in open(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin"):
    match = re.match(r"^(\d+) (.*)", line)
    if not match:
        continue
    pid, rest = match.groups()
    if rest.startswith("seccomp(SECCOMP_SET_MODE_FILTER, 0,"):
        confined.add(pid)
        continue
    if pid not in confined:
        continue
    trap = re.search(r"si_syscall=__NR_(\w+)", rest)
    if trap:
        trapped[trap.group(1)] += 1
        continue
    call = re.match(r"([a-z_0-9]+)\(", rest)
    if call:
        calls[call.group(1)] += 1

print(f"{len(confined)} confined processes")
print("calls after the filter was loaded:")
for name, count in calls.most_common():
    print(f"  {count:8d} {name}")
print("trapped (forbidden) calls:")
for name, count in trapped.most_common():
    print(f"  {count:8d} {name}")
