#!/usr/bin/env bash
# The README's test command: set up a fresh machine if needed, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --no-parallel: several suites account for this process's whole descriptor table and its
# children (no fd leak, no zombie); run concurrently with suites that open descriptors, they
# would see the other suites' descriptors come and go.
exec swift test --no-parallel "$@"
