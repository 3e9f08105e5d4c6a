#!/usr/bin/env bash
# CI's guard on the cost per message: counts the instructions of every scenario in
# Benchmarks/Thresholds/instructions.txt with scripts/instructions.sh (callgrind, deterministic:
# the in-process cycles repeat to the instruction, the shared-memory child within about 0.5 %)
# and fails if any exceeds its maximum. Timings are never checked here (see scripts/bench.sh).
#
#   scripts/check-instructions.sh            # about a minute after the release build
#
# To change a threshold, see the comment at the top of the thresholds file.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
thresholds="$root/Benchmarks/Thresholds/instructions.txt"

scenarios=()
declare -A maximum recorded
while read -r scenario most measured _; do
    [[ -z $scenario || $scenario == \#* ]] && continue
    if [[ -z $most || -z $measured ]]; then
        echo "error: $thresholds: '$scenario' needs a maximum and a measured figure" >&2
        exit 2
    fi
    scenarios+=("$scenario")
    maximum[$scenario]=$most
    recorded[$scenario]=$measured
done <"$thresholds"
[[ ${#scenarios[@]} -gt 0 ]] || {
    echo "error: no scenario in $thresholds" >&2
    exit 2
}

counts="$("$root/scripts/instructions.sh" "${scenarios[@]}")"

failed=0
printf '%-14s %10s %10s %10s  %s\n' scenario measured maximum recorded verdict
for scenario in "${scenarios[@]}"; do
    count=$(awk -v s="$scenario" '$1 == s { print $2 }' <<<"$counts")
    if [[ -z $count ]]; then
        echo "error: no count for $scenario" >&2
        failed=1
        continue
    fi
    verdict=$(awk -v c="$count" -v m="${maximum[$scenario]}" -v r="${recorded[$scenario]}" 'BEGIN {
        if (c > m) print "FAIL: above the maximum"
        else if (c < r * 0.97) print "ok (more than 3 % below the recorded figure: lower the threshold)"
        else print "ok" }')
    printf '%-14s %10s %10s %10s  %s\n' "$scenario" "$count" "${maximum[$scenario]}" "${recorded[$scenario]}" "$verdict"
    [[ $verdict == FAIL* ]] && failed=1
done
if [[ $failed -ne 0 ]]; then
    echo "error: instructions per cycle above $thresholds (a change gave back a gain, or the threshold is stale)" >&2
    exit 1
fi
