#!/usr/bin/env bash
# Installs what a fresh Debian machine with the Swift toolchain lacks to build this package:
# libseccomp's headers and pkg-config (for the sandboxed backend). Idempotent; quiet when
# everything is present.
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists libseccomp 2>/dev/null; then need+=(libseccomp-dev); fi
command -v cc >/dev/null 2>&1 || need+=(gcc)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null || true
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
