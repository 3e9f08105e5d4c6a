#!/bin/busybox sh
# The guest's /init (copied into the initramfs by scripts/guest/build-initramfs.sh).
#
# Mounts proc/sys/devtmpfs, loads the virtio modules listed in /modules/order, waits for
# /dev/vda, runs the workload named on the kernel command line (vqtest.workload=NAME) and prints
# machine-readable lines "VQTEST key=value" on the serial console, then "VQTEST done=1", and
# powers off. Workloads: check, long-write, perf (see each function below); with more than one
# CPU, check also reads from every CPU at once (per_cpu_reads).

/bin/busybox --install -s /bin
export PATH=/bin

mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node (it is built without root), so the kernel started us
# without a console: take the serial console from devtmpfs now.
exec </dev/console >/dev/console 2>&1

say() { echo "VQTEST $*"; }

finish() {
    say "done=1"
    sync
    poweroff -f
    # Not reached unless poweroff failed; QEMU runs with -no-reboot, so reboot ends it too.
    reboot -f
}

# The guest's clock in microseconds (busybox date has no %N; adjtimex shows tv_usec).
now_us() {
    adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d%06d\n", s, u }'
}

# Seconds (six decimals) between two now_us readings.
seconds() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b - a) / 1000000 }'
}

# MiB/s, two decimals, from a byte count and two now_us readings.
mibs() {
    awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { t = (b - a) / 1000000; if (t <= 0) t = 0.000001; printf "%.2f", (n / 1048576) / t }'
}

io_errors() {
    dmesg | grep -ci 'i/o error\|blk_update_request\|Buffer I/O\|critical medium error\|print_req_error'
}

workload=none
for word in $(cat /proc/cmdline); do
    case "$word" in
    vqtest.workload=*) workload=${word#vqtest.workload=} ;;
    esac
done
say "workload=$workload"

if [ -f /modules/order ]; then
    while read -r module; do
        [ -n "$module" ] || continue
        if ! insmod "/modules/$module" 2>/tmp/insmod.err; then
            # Built in or already loaded is fine; anything else is reported.
            if ! grep -q 'File exists' /tmp/insmod.err; then
                say "insmod_failed=$module"
                cat /tmp/insmod.err
            fi
        fi
    done </modules/order
fi

waited=0
while [ ! -b /dev/vda ] && [ "$waited" -lt 300 ]; do
    sleep 0.1
    waited=$((waited + 1))
done
if [ ! -b /dev/vda ]; then
    say "error=no-dev-vda"
    ls /sys/bus/virtio/devices/ 2>&1
    dmesg | tail -n 30
    finish
fi
say "disk=vda"
# What the driver negotiated: the feature bits as a string of 0/1, bit 0 first (28 is
# INDIRECT_DESC, 29 EVENT_IDX, 32 VERSION_1), the number of request queues and their depth.
say "features=$(cat /sys/block/vda/device/features 2>/dev/null)"
say "queues=$(ls -d /sys/block/vda/mq/* 2>/dev/null | wc -l)"
say "queue_depth=$(cat /sys/block/vda/mq/0/nr_tags 2>/dev/null)"

# The pattern the guest writes: the line "VQPATTERN-0123456789abcdef" repeated (yes(1)), cut to
# the length asked. The host regenerates it the same way to check what reached the image.
pattern() {
    yes VQPATTERN-0123456789abcdef | head -c "$1"
}

# check: data that crossed, both ways.
workload_check() {
    # The marker the host wrote in sector 0 (ASCII, NUL-padded): the first 64 bytes, NULs dropped.
    marker=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 64 | tr -d '\000')
    say "marker=$marker"
    sum=$(md5sum </dev/vda | cut -d' ' -f1)
    say "disk_md5=$sum"
    say "serial=$(cat /sys/block/vda/serial 2>/dev/null)"
    say "sectors=$(cat /sys/block/vda/size)"
    say "logical_block_size=$(cat /sys/block/vda/queue/logical_block_size)"

    # 1 MiB of the pattern at 4 MiB, direct I/O, then a flush.
    pattern 1048576 >/tmp/pattern
    say "pattern_offset=4194304"
    say "pattern_length=1048576"
    say "pattern_md5=$(md5sum </tmp/pattern | cut -d' ' -f1)"
    if dd if=/tmp/pattern of=/dev/vda bs=64k seek=64 oflag=direct conv=fsync,notrunc 2>/tmp/dd.err; then
        say "write_ok=1"
    else
        say "write_ok=0"
        cat /tmp/dd.err
    fi
    sync
    blockdev --flushbufs /dev/vda
    back=$(dd if=/dev/vda bs=64k skip=64 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    say "readback_md5=$back"
    per_cpu_reads
    say "io_errors=$(io_errors)"
}

# With more than one CPU: I/O from each CPU at once, so that blk-mq sends it down each CPU's
# hardware queue (virtio-blk maps queue i to CPU i when there are as many queues as CPUs). One
# direct-I/O reader per CPU, pinned to it with taskset, reads its own 4 MiB slice of the disk
# (CPU c: bytes [4c MiB, 4c+4 MiB), in 64 KiB requests) and prints the slice's md5, which the
# host compares with the image's.
per_cpu_reads() {
    cpus=$(nproc)
    say "cpus=$cpus"
    [ "$cpus" -gt 1 ] || return 0
    c=0
    while [ "$c" -lt "$cpus" ]; do
        mask=$(printf '%x' $((1 << c)))
        (taskset "$mask" dd if=/dev/vda bs=64k skip=$((c * 64)) count=64 iflag=direct 2>/tmp/cpu$c.err |
            md5sum | cut -d' ' -f1 >/tmp/cpu$c.md5) &
        c=$((c + 1))
    done
    wait
    c=0
    while [ "$c" -lt "$cpus" ]; do
        say "cpu_slice_md5_$c=$(cat /tmp/cpu$c.md5)"
        c=$((c + 1))
    done
}

# long-write: a long stream (48 MiB at 8 MiB, 64 KiB direct-I/O blocks), slow under TCG, during
# which the host may kill and restart the back-end; the guest must see no error.
workload_long_write() {
    say "pattern_offset=8388608"
    say "pattern_length=50331648"
    say "phase=writing"
    start=$(now_us)
    if pattern 50331648 | dd of=/dev/vda bs=64k seek=128 count=768 iflag=fullblock oflag=direct conv=notrunc 2>/tmp/dd.err; then
        say "write_ok=1"
    else
        say "write_ok=0"
        cat /tmp/dd.err
    fi
    end=$(now_us)
    say "phase=written"
    say "write_seconds=$(seconds "$start" "$end")"
    sync
    blockdev --flushbufs /dev/vda
    say "phase=flushed"
    say "pattern_md5=$(pattern 50331648 | md5sum | cut -d' ' -f1)"
    back=$(dd if=/dev/vda bs=64k skip=128 count=768 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    say "readback_md5=$back"
    say "io_errors=$(io_errors)"
}

# perf: sequential direct-I/O reads and writes of 64 MiB in 1 MiB requests, timed by the guest.
workload_perf() {
    bytes=67108864
    # What one clock reading costs (a fork and exec under TCG), taken off each measurement.
    a=$(now_us)
    b=$(now_us)
    overhead=$((b - a))
    say "clock_overhead_seconds=$(seconds 0 $overhead)"
    start=$(now_us)
    dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct 2>/tmp/dd.err || cat /tmp/dd.err
    end=$(($(now_us) - overhead))
    say "read_seconds=$(seconds "$start" "$end")"
    say "read_mibs=$(mibs $bytes "$start" "$end")"
    start=$(now_us)
    dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct conv=notrunc 2>/tmp/dd.err || cat /tmp/dd.err
    end=$(($(now_us) - overhead))
    say "write_seconds=$(seconds "$start" "$end")"
    say "write_mibs=$(mibs $bytes "$start" "$end")"
    say "io_errors=$(io_errors)"
}

case "$workload" in
check) workload_check ;;
long-write) workload_long_write ;;
perf) workload_perf ;;
*) say "error=unknown-workload" ;;
esac
finish
