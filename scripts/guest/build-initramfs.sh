#!/usr/bin/env bash
# Builds the test guest's initramfs in OUT_DIR: a gzip'd newc cpio holding /bin/busybox (static),
# the virtio modules the kernel needs to see a virtio-blk PCI disk (in dependency order,
# decompressed on the host if the kernel ships them compressed) and /init (scripts/guest/init.sh).
# Copies the kernel next to it. Nothing here is committed as a binary: this runs at test time.
#
# Usage: scripts/guest/build-initramfs.sh OUT_DIR
# Prints two lines on stdout: the initramfs path, then the kernel path.
# Environment: VQTEST_KERNEL (default: the newest /boot/vmlinuz-*), VQTEST_BUSYBOX (default: a
# static busybox from PATH or /bin/busybox).
# Idempotent: rebuilds from scratch into a staging folder and replaces the outputs atomically.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
packages="qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio"

fail() {
    echo "build-initramfs: $*" >&2
    exit 1
}

kernel=${VQTEST_KERNEL:-}
if [ -z "$kernel" ]; then
    kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
fi
[ -n "$kernel" ] && [ -r "$kernel" ] || fail "no readable kernel in /boot (apt-get install $packages)"
version=${kernel##*/vmlinuz-}
moddir=/lib/modules/$version
[ -d "$moddir" ] || fail "no $moddir for kernel $kernel"

busybox=${VQTEST_BUSYBOX:-}
if [ -z "$busybox" ]; then
    for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            busybox=$candidate
            break
        fi
    done
fi
[ -n "$busybox" ] || fail "no busybox (apt-get install busybox-static)"
[ "$(head -c 4 "$busybox" | tail -c 3)" = "ELF" ] || fail "$busybox is not an ELF binary"
# A dynamically linked busybox names its loader in PT_INTERP, near the start of the file.
if [ "$(head -c 4096 "$busybox" | grep -ac 'ld-linux')" != 0 ]; then
    fail "$busybox is dynamically linked (apt-get install busybox-static)"
fi
command -v cpio >/dev/null 2>&1 || fail "no cpio (apt-get install cpio)"

# --- modules: virtio_pci (the transport) and virtio_blk, with their dependencies first -------
declare -A deps=() seen=()
order=()
while IFS= read -r line; do
    name=${line%%:*}
    deps[$name]=${line#*:}
done <"$moddir/modules.dep"

module_path() { # the modules.dep key for a module name (with - and _ equivalent)
    local want=${1//-/_} key base
    for key in "${!deps[@]}"; do
        base=${key##*/}
        base=${base%%.ko*}
        if [ "${base//-/_}" = "$want" ]; then
            echo "$key"
            return 0
        fi
    done
    return 1
}

add_module() { # depth-first: dependencies before the module
    local key=$1 dep
    [ -n "${seen[$key]:-}" ] && return 0
    seen[$key]=1
    # modules.dep lists dependencies so that modprobe loads them from last to first.
    local list=(${deps[$key]})
    local i
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do
        add_module "${list[$i]}"
    done
    order+=("$key")
}

for wanted in virtio_pci virtio_blk; do
    if key=$(module_path "$wanted"); then
        add_module "$key"
    elif grep -Eq "/${wanted//_/[-_]}\.ko" "$moddir/modules.builtin" 2>/dev/null; then
        : # built into the kernel
    else
        fail "kernel $version has $wanted neither as a module nor built in"
    fi
done

# --- the tree -------------------------------------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$here/init.sh" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"

: >"$root/modules/order"
for key in "${order[@]}"; do
    src=$moddir/$key
    base=${key##*/}
    case "$key" in
    *.ko) cp "$src" "$root/modules/$base" ;;
    *.ko.xz) base=${base%.xz}; xz -dc "$src" >"$root/modules/$base" ;;
    *.ko.zst) base=${base%.zst}; zstd -qdc "$src" >"$root/modules/$base" ;;
    *.ko.gz) base=${base%.gz}; gzip -dc "$src" >"$root/modules/$base" ;;
    *) fail "unknown module file $key" ;;
    esac
    echo "$base" >>"$root/modules/order"
done

# Reproducible archive: fixed times, sorted names, no gzip name or time.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -9n >"$stage/initramfs.cpio.gz"
cp "$kernel" "$stage/vmlinuz"
mv -f "$stage/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
mv -f "$stage/vmlinuz" "$out/vmlinuz"
echo "$out/initramfs.cpio.gz"
echo "$out/vmlinuz"
