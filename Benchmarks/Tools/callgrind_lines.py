#!/usr/bin/env python3
"""Instructions per cycle of one function, by instruction and by source line, from two callgrind runs.

    callgrind_lines.py SMALL.out LARGE.out ITERATIONS BINARY SYMBOL [--asm]

SMALL.out and LARGE.out are `valgrind --tool=callgrind --dump-instr=yes` outputs of
`virtqueue-bench profile SCENARIO N` for two values of N that differ by ITERATIONS; BINARY is the
unstripped `virtqueue-bench` (valgrind ran a stripped copy: valgrind 3.19 cannot read Swift 6.3's
DWARF, llvm-symbolizer can); SYMBOL is a substring of the mangled name of the function to read
(the scenario's loop, into which the library's hot path is inlined).

Prints, per instruction of that function executed in the difference, how many times it ran per
cycle and its inline frames (innermost first, `cg` for `<compiler-generated>`): an instruction of
the library inlined into the benchmark has no line of its own in an ordinary release build, but
its outer frame names the benchmark line that called the library — which call it belongs to.
The summary adds the counts up by that frame chain. See docs/performance.md, "The core's cost".
"""
import collections
import re
import subprocess
import sys


def costs(path):
    """Instructions executed per address of the profiled executable in one callgrind output."""
    counts = collections.Counter()
    names = {}
    in_binary = False
    address = 0
    after_call = False
    executable = None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("cmd:"):
            executable = line.split()[1]  # the stripped copy valgrind ran
            continue
        match = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
        if match:
            kind, number, name = match.groups()
            if name:
                names[number] = name
            if kind == "ob":
                in_binary = names.get(number) == executable
            continue
        if line.startswith("calls="):
            after_call = True
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        fields = line.split()
        position = fields[0]
        if position.startswith("0x"):
            address = int(position, 16)
        elif position[0] in "+-":
            address += int(position, 0)  # "+7", "-3": relative, decimal
        if after_call:  # the line after calls= is the call's inclusive cost, not the call's own
            after_call = False
            continue
        if in_binary and len(fields) >= 3:
            counts[address] += int(fields[2])
    return counts


def main():
    small, large, iterations, binary, symbol = sys.argv[1:6]
    show_asm = "--asm" in sys.argv[6:]
    before, after = costs(small), costs(large)
    per_cycle = {a: (after[a] - before[a]) / float(iterations) for a in set(before) | set(after)}
    per_cycle = {a: n for a, n in per_cycle.items() if n > 0.5}
    names = subprocess.run(["nm", binary], capture_output=True, text=True).stdout.split("\n")
    matches = [n.split()[2] for n in names if symbol in n and len(n.split()) == 3]
    if not matches:
        sys.exit(f"no symbol contains {symbol}")
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "--disassemble=" + matches[0], binary],
        capture_output=True, text=True).stdout
    rows = []
    for line in listing.split("\n"):
        match = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if match and int(match.group(1), 16) in per_cycle:
            rows.append((int(match.group(1), 16), match.group(2)))
    frames = subprocess.run(
        ["llvm-symbolizer", "--inlines", "--obj=" + binary],
        input="".join(f"0x{a:x}\n" for a, _ in rows), capture_output=True, text=True).stdout
    blocks = frames.strip("\n").split("\n\n")
    by_site = collections.Counter()
    for (address, text), block in zip(rows, blocks):
        lines = block.split("\n")
        chain = " < ".join(
            lines[i + 1].split("/")[-1].replace("<compiler-generated>:0:0", "cg") for i in range(0, len(lines) - 1, 2))
        by_site[chain] += per_cycle[address]
        if show_asm:
            print(f"{address:8x} {per_cycle[address]:5.1f}  {text[:48]:48} {chain}")
    print(f"{matches[0]}: {sum(per_cycle[a] for a, _ in rows):.2f} instructions per cycle")
    for chain, count in by_site.most_common():
        print(f"{count:8.1f}  {chain}")


main()
