#!/usr/bin/env bash
# Installs what a fresh Debian machine with the Swift toolchain lacks to build this package:
# libseccomp's headers and pkg-config (for the sandboxed backend), and the Linux-guest tests'
# peers (qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio) and DPDK's testpmd
# (dpdk-dev) for the vhost-user network tests. Idempotent; quiet when everything is present.
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists libseccomp 2>/dev/null; then need+=(libseccomp-dev); fi
command -v cc >/dev/null 2>&1 || need+=(gcc)
# The Linux-guest tests (Tests/VirtqueueVhostUserTests/Guest): QEMU, qemu-storage-daemon, a
# kernel, a static busybox and cpio.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-storage-daemon >/dev/null 2>&1 || need+=(qemu-utils)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
busybox=$(command -v busybox 2>/dev/null || echo /bin/busybox)
# The guest needs a static busybox: a dynamic one names its loader near the start of the file.
if [ ! -x "$busybox" ] || [ "$(head -c 4096 "$busybox" | grep -ac ld-linux)" != 0 ]; then need+=(busybox-static); fi
command -v cpio >/dev/null 2>&1 || need+=(cpio)
# The DPDK tests (Tests/VirtqueueVhostUserTests/DPDKTests.swift): dpdk-testpmd, and stdbuf.
command -v dpdk-testpmd >/dev/null 2>&1 || need+=(dpdk-dev)
command -v stdbuf >/dev/null 2>&1 || need+=(coreutils)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null || true
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
