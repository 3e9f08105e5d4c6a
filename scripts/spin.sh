#!/usr/bin/env bash
# Model-checks the notification protocol (docs/model/notification.pml) with SPIN, in both
# notification modes (EVENT_IDX and flags) and several sizes, and shows that each mutant —
# a fence, the re-check, or the 2^16-move guard removed — is caught. Exits non-zero if the
# model fails to verify or a mutant is not caught.
#
#   scripts/spin.sh            # everything (about a minute)
#   scripts/spin.sh --quick    # the default size only
#
# Installs spin and gcc with apt-get when they are missing (Debian: `apt-get install spin`).
# Work files go to .build/spin/. See docs/notification-model.md for what is checked and the
# mapping from each model step to the Swift code.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
model="$root/docs/model/notification.pml"
work="$root/.build/spin"
quick=no
[[ ${1:-} != --quick ]] || quick=yes

need=()
command -v spin >/dev/null || need+=(spin)
command -v gcc >/dev/null || need+=(gcc)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "Installing ${need[*]} with apt-get"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
spin -V

mkdir -p "$work"
cd "$work"
cp "$model" .
failures=0

# verify NAME EXPECT(pass|fail) KIND(safety|liveness) SPIN-DEFINES...
verify() {
    local name=$1 expect=$2 kind=$3
    shift 3
    rm -f pan pan.* ./*.trail
    spin "$@" -a notification.pml >spin.log 2>&1 || { cat spin.log; exit 1; }
    local result
    if [[ $kind == safety ]]; then
        gcc -O2 -w -DSAFETY -DNOCLAIM -o pan pan.c
        result=$(./pan -m10000000 2>&1 || true)
    else
        gcc -O2 -w -o pan pan.c
        result=$(./pan -a -f -m10000000 2>&1 || true)
    fi
    local errors states outcome
    errors=$(grep -oE 'errors: [0-9]+' <<<"$result" | grep -oE '[0-9]+' || echo "?")
    states=$(grep -oE '[0-9.e+]+ states, stored' <<<"$result" | head -1 | cut -d' ' -f1)
    local what
    what=$(grep -oE 'invalid end state|assertion violated|acceptance cycle' <<<"$result" | head -1 || true)
    if [[ $errors == 0 ]]; then outcome=verified; else outcome="FAILS (${what:-error})"; fi
    local verdict=ok
    if [[ $expect == pass && $errors != 0 ]] || [[ $expect == fail && $errors == 0 ]]; then
        verdict="UNEXPECTED"
        failures=$((failures + 1))
        [[ ! -f notification.pml.trail ]] || spin -t -p "$@" notification.pml | tail -30
    fi
    printf '%-58s %-9s %-30s %10s states  %s\n' "$name" "$kind" "$outcome" "${states:-?}" "$verdict"
}

sizes=("-DN=2 -DM=4 -DK=6")
[[ $quick == yes ]] || sizes+=("-DN=1 -DM=2 -DK=4" "-DN=3 -DM=6 -DK=8" "-DN=2 -DM=8 -DK=10")

echo
echo "== The protocol as implemented: must verify"
for mode in 1 0; do
    label=$([[ $mode == 1 ]] && echo EVENT_IDX || echo flags)
    for size in "${sizes[@]}"; do
        # shellcheck disable=SC2086
        verify "$label $size" pass safety -DEVENT_IDX=$mode $size
    done
    verify "$label -DN=2 -DM=4 -DK=6 (LTL allChainsReturn, weak fairness)" pass liveness -DEVENT_IDX=$mode
done

echo
echo "== Mutants: each must fail"
for mode in 1 0; do
    label=$([[ $mode == 1 ]] && echo EVENT_IDX || echo flags)
    for mutant in NO_RECHECK NO_ENABLE_FENCE NO_PUBLISH_FENCE NO_WRAP_GUARD; do
        verify "$label $mutant" fail safety -DEVENT_IDX=$mode -D$mutant
    done
done

echo
if [[ $failures -gt 0 ]]; then
    echo "$failures unexpected result(s)"
    exit 1
fi
echo "All as expected: the model verifies and every mutant is caught."
