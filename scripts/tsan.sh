#!/usr/bin/env bash
# Runs the heap backend's concurrent stress test under ThreadSanitizer: the driver on the test's
# thread, a checksum device on its own, 200,000 chains (VIRTQUEUE_STRESS_CHAINS) for each of
# four feature sets, every reply checked.
#
#   scripts/tsan.sh               # HeapStressTests
#   scripts/tsan.sh FILTER        # another `swift test --filter` expression
#
# Builds in release mode into .build-tsan/ (the normal .build/ is left alone). Release matters:
# in a debug build the standard library's raw-pointer loads and stores (loadUnaligned,
# storeBytes, pointee) are calls into libswiftCore, which is not instrumented, so TSan cannot
# see the ring's memory at all; optimised, they are inlined into our instrumented code.
# TSAN_OPTIONS makes any report fatal (halt_on_error=1), so a race fails the run even if the
# test itself would pass.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
filter=${1:-HeapStressTests}

if ! command -v swift >/dev/null; then
    [[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null || { echo "swift is not on PATH (install a swift.org toolchain)" >&2; exit 1; }

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export VIRTQUEUE_STRESS_CHAINS=${VIRTQUEUE_STRESS_CHAINS:-200000}
export SWIFT_BACKTRACE=enable=no
cd "$root"
swift build -c release --build-tests --sanitize=thread --scratch-path .build-tsan
swift test -c release --skip-build --sanitize=thread --scratch-path .build-tsan --filter "$filter" 2>&1 |
    tee .build-tsan/tsan.log
if grep -q "ThreadSanitizer" .build-tsan/tsan.log; then
    echo "ThreadSanitizer reported a problem (see above)" >&2
    exit 1
fi
echo "ThreadSanitizer: no reports."
