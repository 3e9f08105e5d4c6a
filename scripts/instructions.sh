#!/usr/bin/env bash
# Counts the instructions one cycle of a benchmark scenario costs, with callgrind: the figure in
# docs/performance.md that does not move with the load on the machine.
#
#   scripts/instructions.sh                 # one three c cvq: the in-process cycles and baselines
#   scripts/instructions.sh serve threads   # the device's serve loop, a two-thread stream
#
# Each scenario runs `virtqueue-bench profile SCENARIO N` twice, for N = 100,000 and 200,000,
# under `valgrind --tool=callgrind`; the difference in instructions over the difference in N is
# the cost of one cycle, without start-up and set-up. Scenarios: one, three (the heap cycles), c
# (the C ring), cvq (the hand-written C virtqueue), serve, serve-generic, threads (see
# `virtqueue-bench --help`). Installs valgrind with apt-get if it is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="$root/Benchmarks"
scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(one three c cvq)

if ! command -v valgrind >/dev/null; then
    echo "Installing valgrind with apt-get" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind
fi

swift build -c release --package-path "$package" --product virtqueue-bench >&2
bin="$(swift build -c release --package-path "$package" --show-bin-path)"

# valgrind 3.19 cannot read the DWARF Swift 6.3 emits: count a copy without it.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug "$bin/virtqueue-bench" "$work/virtqueue-bench"

instructions() {
    LD_LIBRARY_PATH="$bin" valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "$work/virtqueue-bench" profile "$1" "$2" 2>&1 >/dev/null |
        awk '/Collected :/ { print $4 } /I[ ]+refs:/ { gsub(",", "", $4); print $4 }' | tail -1
}

printf '%-16s %s\n' scenario "instructions per cycle"
for scenario in "${scenarios[@]}"; do
    small=$(instructions "$scenario" 100000)
    large=$(instructions "$scenario" 200000)
    if [[ -z $small || -z $large ]]; then
        echo "callgrind did not report a count for $scenario" >&2
        exit 1
    fi
    printf '%-16s %s\n' "$scenario" "$(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", (b - a) / 100000 }')"
done
