#!/usr/bin/env bash
# Builds the DocC documentation of every public module (swift-docc-plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
targets=(Virtqueue VirtqueueHeap VirtqueueSharedMemory VirtqueueSandbox VirtqueueAsync VirtqueueConformance)
args=()
for target in "${targets[@]}"; do args+=(--target "$target"); done
exec swift package generate-documentation --enable-experimental-combined-documentation "${args[@]}" "$@"
