#!/usr/bin/env bash
# Runs the benchmark suite: every scenario and every baseline (C ring, C virtqueue, pipe,
# socketpair) in one invocation, and prints a table with the ratios to each baseline, the targets
# of issues 15 and 7 (met, missed or pending, each judged on ratios of this invocation), then JSON.
# Instruction counts are scripts/instructions.sh's, not this script's.
#
#   scripts/bench.sh                      # full suite (about 3 minutes on 2 cores)
#   scripts/bench.sh --quick              # short runs, for a smoke test
#   scripts/bench.sh --json out.json --svg out.svg --filter "round trip"
#   scripts/bench.sh --package-benchmark  # also package-benchmark's in-process suite and its
#                                         # 0-malloc thresholds (Benchmarks/Thresholds/swift-6.3)
#
# Options other than --package-benchmark go to virtqueue-bench (see its --help).
# The cross-process scenarios pin the two processes to CPUs 0 and 1 (--cpus A,B to change).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="$root/Benchmarks"

run_package_benchmark=0
arguments=()
for argument in "$@"; do
    if [[ "$argument" == "--package-benchmark" ]]; then
        run_package_benchmark=1
    else
        arguments+=("$argument")
    fi
done

swift build -c release --package-path "$package" --product virtqueue-bench >&2
bin="$(swift build -c release --package-path "$package" --show-bin-path)"

# The malloc interposer counts allocations only when preloaded (as package-benchmark does).
LD_PRELOAD="$bin/libMallocInterposerSwift.so" "$bin/virtqueue-bench" "${arguments[@]+"${arguments[@]}"}"

if [[ "$run_package_benchmark" == 1 ]]; then
    swift package --package-path "$package" --disable-sandbox benchmark
    # The committed thresholds hold the in-process cycles to 0 mallocs.
    swift package --package-path "$package" --disable-sandbox benchmark thresholds check \
        --metric mallocCountTotal --path "$package/Thresholds/swift-6.3"
fi
