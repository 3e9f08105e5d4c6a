#!/usr/bin/env bash
# The README's main command: set up a fresh machine if needed, then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec swift run -c release BlockDemo "$@"
