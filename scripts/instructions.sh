#!/usr/bin/env bash
# Counts the instructions one cycle of a benchmark scenario costs, with callgrind: the figure in
# docs/performance.md that does not move with the load on the machine.
#
#   scripts/instructions.sh                       # one three c cvq: the in-process cycles and baselines
#   scripts/instructions.sh cvq3 cvq-full cvq3-full
#   scripts/instructions.sh shm-child c-child     # the device child of a cross-process stream
#   scripts/instructions.sh --help                # every scenario
#
# Each scenario runs `virtqueue-bench profile ... N` twice, for N = 100,000 and 200,000, under
# `valgrind --tool=callgrind`; the difference in instructions over the difference in N is the
# cost of one cycle (or message), without start-up and set-up. The child scenarios run only the
# child under callgrind: the parent starts it through a wrapper (VQB_PROFILE_CHILD) that execs
# valgrind, so the figure is the device process's instructions per message alone. Prints two
# decimals. Installs valgrind (and objcopy) with apt-get if they are missing.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/instructions.sh [SCENARIO...]     (default: one three c cvq)

In-process cycles (both ends on one thread, per cycle):
  one          the Swift heap cycle, one readable 64 B segment
  one-send     `one` with DriverQueue.send(count:_:) in place of makeChain, appendReadable, submit
  three        the Swift heap cycle, two readable 64 B segments and one writable (8-byte reply)
  one-packed, three-packed  the same cycles on the packed ring
  one-in-order, three-in-order
               the same two cycles with VIRTIO_F_IN_ORDER negotiated
  one-packed-in-order, three-packed-in-order
               the same on the packed ring
  c            the plain C ring's cycle
  cvq          the hand-written C virtqueue, one segment, minimal checks
  cvq3         the hand-written C virtqueue, the `three` chain, minimal checks
  cvq-full     the hand-written C virtqueue, one segment walked as a chain, the Swift core's checks
  cvq3-full    the hand-written C virtqueue, the `three` chain, the Swift core's checks
Device loops (per message, the driver's side included):
  serve          the device's serve loop on one thread, concrete device (batches of 256)
  serve-generic  the same through an existential device
  threads        a 64 B batch-32 stream to a device thread (both threads)
The device child of a 64 B batch-32 stream across processes (per message, the child alone):
  shm-child    the Swift shared-memory backend's device process (TouchDevice, an entry)
  shm-child-packed  the same on the packed ring
  shm-child-in-order  the same on the split ring with VIRTIO_F_IN_ORDER negotiated
  c-child      the C virtqueue's device process, on the same stream and wake-ups
  c-child-full the same C device doing the Swift core's checks (each chain walked and kept
               privately before use, the heads in flight recorded)
EOF
}

scenarios=()
for argument in "$@"; do
    case "$argument" in
    -h | --help)
        usage
        exit 0
        ;;
    one | one-send | three | one-packed | three-packed | one-in-order | three-in-order | one-packed-in-order | three-packed-in-order | shm-child-packed | shm-child-in-order | c | cvq | cvq3 | cvq-full | cvq3-full | serve | serve-generic | threads | shm-child | c-child | c-child-full)
        scenarios+=("$argument")
        ;;
    *)
        echo "unknown scenario: $argument" >&2
        usage >&2
        exit 2
        ;;
    esac
done
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(one three c cvq)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="$root/Benchmarks"

# valgrind, and objcopy (binutils) for the stripped copy: a fresh Debian machine may lack both.
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v objcopy >/dev/null || need+=(binutils)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "Installing ${need[*]} with apt-get" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

swift build -c release --package-path "$package" --product virtqueue-bench >&2
bin="$(swift build -c release --package-path "$package" --show-bin-path)"

# valgrind 3.19 cannot read the DWARF Swift 6.3 emits: count a copy without it.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug "$bin/virtqueue-bench" "$work/virtqueue-bench"
# The child wrapper: the parent spawns it in place of the executable; it runs the device under
# callgrind into $VQB_CHILD_OUT (valgrind replaces %p with the child's pid).
cat >"$work/child.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="\$VQB_CHILD_OUT" "$work/virtqueue-bench" "\$@" 2>/dev/null
EOF
chmod +x "$work/child.sh"

# Instructions of `profile SCENARIO N`, the whole process under callgrind.
instructions() {
    LD_LIBRARY_PATH="$bin" valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "$work/virtqueue-bench" profile "$1" "$2" 2>&1 >/dev/null |
        awk '/Collected :/ { print $4 } /I[ ]+refs:/ { gsub(",", "", $4); print $4 }' | tail -1
}

# Instructions of the child of `profile SCENARIO N` alone; the parent runs natively (valgrind
# 3.19 does not know pidfd_open, which the Swift backends' parent uses).
child_instructions() {
    rm -f "$work"/child.out.*
    if ! VQB_CHILD_OUT="$work/child.out.%p" VQB_PROFILE_CHILD="$work/child.sh" LD_LIBRARY_PATH="$bin" \
        "$work/virtqueue-bench" profile "$1" "$2" >/dev/null; then
        echo "profile $1 $2 failed" >&2
        return
    fi
    local files=("$work"/child.out.*)
    if [[ ${#files[@]} -ne 1 || ! -f ${files[0]} ]]; then
        echo "profile $1 $2: expected one child profile, found ${#files[@]}" >&2
        return
    fi
    awk '/^summary:/ { print $2 }' "${files[0]}"
}

printf '%-16s %s\n' scenario "instructions per cycle"
for scenario in "${scenarios[@]}"; do
    case "$scenario" in
    shm-child) count=(child_instructions shm) ;;
    shm-child-packed) count=(child_instructions shm-packed) ;;
    shm-child-in-order) count=(child_instructions shm-in-order) ;;
    c-child) count=(child_instructions cvq-shm) ;;
    c-child-full) count=(child_instructions cvq-shm-full) ;;
    *) count=(instructions "$scenario") ;;
    esac
    small=$("${count[@]}" 100000)
    large=$("${count[@]}" 200000)
    if [[ -z $small || -z $large ]]; then
        echo "callgrind did not report a count for $scenario" >&2
        exit 1
    fi
    printf '%-16s %s\n' "$scenario" "$(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", (b - a) / 100000 }')"
done
