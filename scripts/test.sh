#!/usr/bin/env bash
# The README's test command: set up a fresh machine if needed, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec swift test "$@"
