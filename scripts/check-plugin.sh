#!/usr/bin/env bash
# Checks the new-component-pair plugin end to end, in scratch copies of the checkout's tracked
# files:
#   1. inside the package itself: generate a pair, build it, run its test (which runs the pair at
#      every isolation level), and check that a bad name and an existing pair are refused without
#      writing anything;
#   2. downstream: a separate package that depends on the checkout by path, from a folder not
#      named swift-virtqueue (so the dependency's identity is not the package's name). It checks
#      what such a consumer resolves, then generates a pair there, builds it with every import
#      checked against the declared dependencies and no warnings in the generated files, and
#      runs its test at the three isolation levels on each ring format.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d /tmp/virtqueue-plugin-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
started=$SECONDS
step() { echo "== $1 ($((SECONDS - started)) s)"; }

# The checkout (its tracked and new, not ignored, files as they are in the working tree), under
# a folder name that is not the package's name.
mkdir "$scratch/vq-checkout"
git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -cf - |
    tar -xf - -C "$scratch/vq-checkout"

# 1. Inside swift-virtqueue.
cp -R "$scratch/vq-checkout" "$scratch/inside"
cd "$scratch/inside"

step "inside the package: generate a pair"
swift package --allow-writing-to-package-directory new-component-pair SmokeCheck

step "inside the package: build and run its test"
swift build --build-tests
swift test --skip-build --filter SmokeCheckPairTests

step "inside the package: refusals"
checksum=$(cat Package.swift Sources/SmokeCheckPair/*.swift | md5sum)
for bad in SmokeCheck smokeCheck "Smoke-Check" Virtqueue; do
    if swift package --allow-writing-to-package-directory new-component-pair "$bad" >/dev/null 2>&1; then
        echo "error: new-component-pair accepted '$bad'" >&2
        exit 1
    fi
done
if [ "$(cat Package.swift Sources/SmokeCheckPair/*.swift | md5sum)" != "$checksum" ]; then
    echo "error: a refused run changed files" >&2
    exit 1
fi

# 2. Downstream, in a package that depends on the checkout by path.
mkdir "$scratch/consumer"
cd "$scratch/consumer"
cat >Package.swift <<'EOF'
// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "VirtqueueConsumer",
    dependencies: [.package(path: "../vq-checkout")],
    targets: []
)
EOF

step "downstream: what a consumer resolves"
swift package resolve
resolved=$(sed -n 's/.*"identity" : "\(.*\)".*/\1/p' Package.resolved | sort | tr '\n' ' ')
echo "resolved: $resolved"
if [ "$resolved" != "swift-system " ]; then
    echo "error: a package depending on swift-virtqueue should resolve only swift-system, got: $resolved" >&2
    exit 1
fi

step "downstream: generate a pair"
swift package --allow-writing-to-package-directory new-component-pair ConsumerCheck
grep -q '.product(name: "Virtqueue", package: "vq-checkout")' Package.swift

step "downstream: build (every import declared, no warnings in the generated files)"
log="$scratch/consumer-build.log"
swift build --build-tests --explicit-target-dependency-import-check error 2>&1 | tee "$log"
if grep -E "^$scratch/consumer/(Sources|Tests)/[^ ]*: (warning|error):" "$log"; then
    echo "error: warnings in the generated files" >&2
    exit 1
fi

step "downstream: run its test at every isolation level on every ring"
swift test --skip-build --filter ConsumerCheckPairTests 2>&1 | tee "$log"
for isolation in heap sharedMemory sandbox; do
    for ring in split splitInOrder packed packedInOrder; do
        if ! grep -F "to echoesAtEveryIsolationLevel(isolation:ring:)" "$log" |
            grep -F "isolation → .$isolation," | grep -qF "ring → .$ring to "; then
            echo "error: the generated test did not run at the $isolation level on the $ring ring" >&2
            exit 1
        fi
    done
done
grep -qF "echoesAtEveryIsolationLevel(isolation:ring:) with 12 test cases passed" "$log"

step "downstream: refusal"
checksum=$(cat Package.swift Sources/ConsumerCheckPair/*.swift | md5sum)
if swift package --allow-writing-to-package-directory new-component-pair ConsumerCheck >/dev/null 2>&1; then
    echo "error: new-component-pair accepted an existing pair downstream" >&2
    exit 1
fi
if [ "$(cat Package.swift Sources/ConsumerCheckPair/*.swift | md5sum)" != "$checksum" ]; then
    echo "error: a refused run changed files" >&2
    exit 1
fi

echo "plugin check passed in $((SECONDS - started)) s"
