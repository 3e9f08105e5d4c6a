#!/usr/bin/env bash
# Boots the test guest (scripts/guest/) under QEMU (TCG) with the `perf` workload — a 64 MiB
# sequential direct-I/O read, then a 64 MiB write, timed by the guest — against
# qemu-storage-daemon (the control), and against any other vhost-user-blk back-end given as a
# command, on same-sized images; one run each. Prints each back-end's MiB/s and the ratios to the
# control. With --runs N, the back-ends alternate N times and the medians are shown.
#
#   scripts/guest-bench.sh
#   scripts/guest-bench.sh --backend-command 'swift run VhostUserBlock --socket {socket} --image {image}'
#
# Options:
#   --backend-command CMD   a back-end to compare, run with bash -c; {socket} and {image} are
#                           replaced by the socket path to serve and the raw image to serve
#   --name NAME             its name in the table (default: candidate)
#   --image-mib N           image size (default 128)
#   --ready-timeout S       how long a back-end may take to create its socket (default 600, so
#                           a `swift run` may build first)
#   --runs N                runs per back-end, alternating; the table shows medians (default 1)
#   --keep                  keep the scratch folder (logs, consoles)
# Needs: qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio (scripts/setup.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
backend_command=""
name="candidate"
image_mib=128
ready_timeout=600
runs=1
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --backend-command) backend_command=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --image-mib) image_mib=$2; shift 2 ;;
    --ready-timeout) ready_timeout=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "guest-bench: unknown option $1" >&2; exit 2 ;;
    esac
done

for tool in qemu-system-x86_64 qemu-storage-daemon cpio; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "guest-bench: $tool missing; run scripts/setup.sh" \
            "(apt-get install qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio)" >&2
        exit 1
    fi
done

scratch=$(mktemp -d /tmp/vqtest-bench-XXXXXX)
backend_pid=""
qemu_pid=""
cleanup() {
    [ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    stop_backend
    if [ "$keep" = 1 ]; then echo "guest-bench: kept $scratch" >&2; else rm -rf "$scratch"; fi
}
stop_backend() {
    if [ -n "$backend_pid" ]; then
        kill -TERM -- "-$backend_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$backend_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$backend_pid" 2>/dev/null || true
        wait "$backend_pid" 2>/dev/null || true
        backend_pid=""
    fi
}
trap cleanup EXIT

mapfile -t built < <("$root/scripts/guest/build-initramfs.sh" "$scratch/guest")
initramfs=${built[0]}
kernel=${built[1]}

run_count=0

# run_one LABEL COMMAND: serves a fresh image with COMMAND ({socket}, {image} replaced), boots the
# guest with the perf workload, and sets read_mibs and write_mibs.
run_one() {
    local label=$1 command=$2
    run_count=$((run_count + 1))
    local dir="$scratch/run$run_count"
    mkdir -p "$dir"
    local image="$dir/disk.img" socket="$dir/blk.sock" console="$dir/console.log"
    # A written image (not holes), the same for every back-end.
    { yes VQBENCH-0123456789abcdef || true; } | head -c $((image_mib << 20)) >"$image"
    command=${command//\{socket\}/$socket}
    command=${command//\{image\}/$image}
    echo "guest-bench: [$label] $command" >&2
    setsid bash -c "$command" >"$dir/backend.log" 2>&1 &
    backend_pid=$!
    local waited=0
    until [ -S "$socket" ]; do
        if ! kill -0 "$backend_pid" 2>/dev/null; then
            echo "guest-bench: [$label] the back-end exited before serving $socket:" >&2
            cat "$dir/backend.log" >&2
            exit 1
        fi
        if [ "$waited" -ge $((ready_timeout * 10)) ]; then
            echo "guest-bench: [$label] no socket after ${ready_timeout}s" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    timeout -s KILL 300 qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 256M \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$console" -kernel "$kernel" -initrd "$initramfs" \
        -append "console=ttyS0 panic=-1 loglevel=4 vqtest.workload=perf" \
        -chardev "socket,id=vqdisk,path=$socket" -device vhost-user-blk-pci,chardev=vqdisk,id=vqblk0 \
        >"$dir/qemu.log" 2>&1 &
    qemu_pid=$!
    local status=0
    wait "$qemu_pid" || status=$?
    qemu_pid=""
    stop_backend
    value() { sed -n "s/^VQTEST $1=\([^\r]*\).*/\1/p" "$console" | tail -n 1; }
    read_mibs=$(value read_mibs)
    write_mibs=$(value write_mibs)
    local errors done
    errors=$(value io_errors)
    done=$(value done)
    if [ "$status" -ne 0 ] || [ "$done" != 1 ] || [ -z "$read_mibs" ] || [ -z "$write_mibs" ] || [ "$errors" != 0 ]; then
        echo "guest-bench: [$label] the guest run failed (status $status, io_errors=${errors:-?}):" >&2
        cat "$dir/qemu.log" >&2
        tail -n 30 "$console" >&2
        exit 1
    fi
    echo "guest-bench: [$label] read $read_mibs MiB/s, write $write_mibs MiB/s" >&2
}

daemon_command='qemu-storage-daemon --blockdev driver=file,node-name=file0,filename={image}'
daemon_command+=' --blockdev driver=raw,node-name=disk0,file=file0'
daemon_command+=' --export type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable=on'

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

control_reads=() control_writes=() reads=() writes=()
for _ in $(seq "$runs"); do
    run_one control "$daemon_command"
    control_reads+=("$read_mibs")
    control_writes+=("$write_mibs")
    if [ -n "$backend_command" ]; then
        run_one "$name" "$backend_command"
        reads+=("$read_mibs")
        writes+=("$write_mibs")
    fi
done
control_read=$(median "${control_reads[@]}")
control_write=$(median "${control_writes[@]}")

echo
echo "Guest sequential direct I/O, 64 MiB in 1 MiB requests (QEMU TCG, 1 vCPU, ${image_mib} MiB image," \
    "$([ "$runs" = 1 ] && echo "one run" || echo "median of $runs runs"))"
printf '  %-28s %12s %12s\n' "back-end" "read MiB/s" "write MiB/s"
printf '  %-28s %12s %12s\n' "qemu-storage-daemon" "$control_read" "$control_write"
if [ -n "$backend_command" ]; then
    read_mibs=$(median "${reads[@]}")
    write_mibs=$(median "${writes[@]}")
    printf '  %-28s %12s %12s\n' "$name" "$read_mibs" "$write_mibs"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
    printf '  %-28s %12s %12s\n' "$name / control" "$(ratio "$read_mibs" "$control_read")" \
        "$(ratio "$write_mibs" "$control_write")"
fi
