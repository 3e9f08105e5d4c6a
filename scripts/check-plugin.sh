#!/usr/bin/env bash
# Checks the new-component-pair plugin end to end: copies the package into a scratch folder,
# generates a pair there, builds it and runs its test (which runs the pair at every isolation
# level), and checks that a bad name and an existing pair are refused without writing anything.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d /tmp/virtqueue-plugin-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$scratch/"
cd "$scratch"

echo "== generate a pair"
swift package --allow-writing-to-package-directory new-component-pair SmokeCheck

echo "== build and run its test"
swift build --build-tests
swift test --skip-build --filter SmokeCheckPairTests

echo "== refusals"

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
echo "plugin check passed"
