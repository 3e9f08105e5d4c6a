#!/usr/bin/env bash
# Builds the libFuzzer targets in FuzzTesting/ (with -sanitize=fuzzer,address) and runs each
# for a given time or number of executions, starting from the committed seed corpus.
#
#   scripts/fuzz.sh                        # every target for 60 s
#   scripts/fuzz.sh --time 600 FuzzDevice  # one target for 10 minutes
#   scripts/fuzz.sh --runs 10000000        # every target for 10^7 executions
#   scripts/fuzz.sh --regressions          # replay Corpus/ and FailCases/ only
#
# Options:
#   --time SECONDS   run each target this long (default 60)
#   --runs N         run each target for N executions instead
#   --jobs N         fuzz each target with N parallel workers (default 1)
#   --regressions    only replay the saved inputs (no fuzzing)
#   --build-only     build the targets and stop
#   --merge          afterwards, merge new coverage into FuzzTesting/Corpus/<target>/
#   -- ARGS          pass the remaining arguments to libFuzzer
#
# Work files go to FuzzTesting/.build/fuzz/<target>/ (corpus/, artifacts/, log). A crash
# stops the run with a non-zero status; its input is in artifacts/. Copy it to
# FuzzTesting/FailCases/<target>/, fix the bug, and `swift test --filter FuzzReplayTests`
# replays it from then on.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir="$root/FuzzTesting"
all_targets=(FuzzDevice FuzzDevicePacked FuzzDriver FuzzDriverPacked FuzzHeader FuzzVhostUser)

time_limit=60
runs=""
jobs=1
mode=fuzz
merge=no
targets=()
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --time) time_limit=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --regressions) mode=regressions; shift ;;
        --build-only) mode=build; shift ;;
        --merge) merge=yes; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        Fuzz*) targets+=("$1"); shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")

# --- What a fresh Debian machine needs beyond the Swift toolchain -------------------------
apt_install() {
    local missing=("$@")
    echo "Installing ${missing[*]} with apt-get"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}
need=()
command -v ld.gold >/dev/null || need+=(binutils)
command -v timeout >/dev/null || need+=(coreutils)
[[ -e /usr/include/stdlib.h ]] || need+=(libc6-dev)
[[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"

if ! command -v swift >/dev/null; then
    [[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null || { echo "swift is not on PATH (install a swift.org toolchain)" >&2; exit 1; }
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
if ! compgen -G "$toolchain/lib/clang/*/lib/linux/libclang_rt.fuzzer-$(uname -m).a" >/dev/null; then
    echo "this Swift toolchain ($toolchain) has no libFuzzer runtime; use a swift.org Linux toolchain" >&2
    exit 1
fi

# --- Build -----------------------------------------------------------------------------------
flags=(-c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
# FuzzTesting reaches the library as a path dependency, and SwiftPM (6.3) reuses its saved build
# plan without noticing a source file added to the library since: the build then fails with
# "cannot find … in scope". Planning again costs about a second.
rm -f "$fuzz_dir/.build/release.yaml"
for target in "${targets[@]}"; do
    echo "== building $target"
    swift build --package-path "$fuzz_dir" --product "$target" "${flags[@]}"
done
bin=$(swift build --package-path "$fuzz_dir" "${flags[@]}" --show-bin-path)
[[ $mode != build ]] || exit 0

# The Swift runtime's crash backtracer and ASan's handler fight over a crash; let ASan report.
export SWIFT_BACKTRACE=enable=no

# --- Run -------------------------------------------------------------------------------------
status=0
for target in "${targets[@]}"; do
    seeds="$fuzz_dir/Corpus/$target"
    fails="$fuzz_dir/FailCases/$target"
    work="$fuzz_dir/.build/fuzz/$target"
    mkdir -p "$work/corpus" "$work/artifacts" "$fails"
    if [[ $mode == regressions ]]; then
        echo "== $target: replaying $(ls "$seeds" | wc -l) seeds and $(ls "$fails" | wc -l) fail cases"
        "$bin/$target" -runs=0 "$seeds" "$fails" "${extra[@]}" || status=1
        continue
    fi
    limit=(-max_total_time="$time_limit")
    [[ -z $runs ]] || limit=(-runs="$runs")
    workers=()
    [[ $jobs -le 1 ]] || workers=(-jobs="$jobs" -workers="$jobs")
    command=("$bin/$target" "$work/corpus" "$seeds" "$fails" "${limit[@]}" "${workers[@]}"
        -artifact_prefix="$work/artifacts/" -print_final_stats=1 -timeout=10 "${extra[@]}")
    echo "== $target: ${command[*]}"
    if (cd "$work" && "${command[@]}") >"$work/log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$work/log" || true
        grep -E '^#[0-9]+.*DONE' "$work/log" | tail -1 || true
    else
        status=1
        echo "!! $target failed; the end of $work/log:"
        tail -40 "$work/log"
        ls -l "$work/artifacts" || true
    fi
    if [[ $merge == yes ]]; then
        echo "== $target: merging new coverage into $seeds"
        "$bin/$target" -merge=1 "$seeds" "$work/corpus" >"$work/merge.log" 2>&1 || status=1
        tail -2 "$work/merge.log"
    fi
done
exit $status
