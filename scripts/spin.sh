#!/usr/bin/env bash
# Model-checks the notification protocol with SPIN — the split ring's
# (docs/model/notification.pml) and the packed ring's event suppression
# (docs/model/packed-notification.pml), both on x86-TSO (docs/model/tso.pml) — in both
# notification modes (EVENT_IDX and flags) and several sizes, and shows that each mutant — a
# fence, the re-check, the 2^16-move guard, the event's wrap bit or the move count removed — is
# caught. Exits non-zero if a model fails to verify or a mutant is not caught.
#
#   scripts/spin.sh            # everything (a few minutes)
#   scripts/spin.sh --quick    # the default size only
#
# Installs spin and gcc with apt-get when they are missing (Debian: `apt-get install spin`).
# Work files go to .build/spin/. See docs/notification-model.md for what is checked and the
# mapping from each model step to the Swift code.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
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
cp "$root"/docs/model/*.pml .
failures=0

# verify NAME EXPECT(pass|fail) KIND(safety|liveness) SPIN-DEFINES...   (checks $model)
verify() {
    local name=$1 expect=$2 kind=$3
    shift 3
    rm -f pan pan.* ./*.trail
    spin "$@" -a "$model" >spin.log 2>&1 || { cat spin.log; exit 1; }
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
        [[ ! -f "$model.trail" ]] || spin -t -p "$@" "$model" | tail -30
    fi
    printf '%-58s %-9s %-30s %10s states  %s\n' "$name" "$kind" "$outcome" "${states:-?}" "$verdict"
}

# check MODEL TITLE EVENT_IDX-LABEL FLAGS-LABEL "MUTANTS" ["EVENT_IDX-ONLY MUTANTS"]: verifies
# MODEL in both modes at every size of $sizes (and the LTL property at the default size), then
# checks that each mutant fails.
check() {
    model=$1
    local title=$2 on=$3 off=$4 mutants=$5 eventOnly=${6:-} mode label size mutant
    echo
    echo "== $title: must verify"
    for mode in 1 0; do
        label=$([[ $mode == 1 ]] && echo "$on" || echo "$off")
        for size in "${sizes[@]}"; do
            # shellcheck disable=SC2086
            verify "$label $size" pass safety -DEVENT_IDX=$mode $size
        done
        verify "$label -DN=2 -DM=4 -DK=6 (LTL allChainsReturn, weak fairness)" pass liveness -DEVENT_IDX=$mode
    done
    echo
    echo "== $title, mutants: each must fail"
    for mode in 1 0; do
        label=$([[ $mode == 1 ]] && echo "$on" || echo "$off")
        local all=$mutants
        [[ $mode == 0 ]] || all="$all $eventOnly"
        for mutant in $all; do
            verify "$label $mutant" fail safety -DEVENT_IDX=$mode -D"$mutant"
        done
    done
}

# The split ring: free-running indices modulo M (M = 2N and M = 4N).
sizes=("-DN=2 -DM=4 -DK=6")
[[ $quick == yes ]] || sizes+=("-DN=1 -DM=2 -DK=4" "-DN=3 -DM=6 -DK=8" "-DN=2 -DM=8 -DK=10")
check notification.pml "The split ring as implemented" EVENT_IDX flags \
    "NO_RECHECK NO_ENABLE_FENCE NO_PUBLISH_FENCE NO_WRAP_GUARD"

# The packed ring: positions modulo M = 2N (a descriptor index and a wrap bit); the wrap bit
# only matters to DESC events.
sizes=("-DN=2 -DM=4 -DK=6")
[[ $quick == yes ]] || sizes+=("-DN=1 -DM=2 -DK=4" "-DN=3 -DM=6 -DK=8" "-DN=2 -DM=4 -DK=10")
check packed-notification.pml "The packed ring's event suppression (ENABLE / DISABLE / DESC with off_wrap)" \
    "packed DESC" "packed ENABLE/DISABLE" "NO_RECHECK NO_ENABLE_FENCE NO_PUBLISH_FENCE POSITION_MOVES" NO_WRAP_BIT

echo
if [[ $failures -gt 0 ]]; then
    echo "$failures unexpected result(s)"
    exit 1
fi
echo "All as expected: both models verify and every mutant is caught."
