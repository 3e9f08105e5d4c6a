#!/usr/bin/env bash
# Packets per second over vhost-user with DPDK 22.11's testpmd (Debian's dpdk-dev), one run each,
# every process on a CPU of its own (testpmd's two lcores on CPU 1, the other side on CPU 0):
#
#   baseline   testpmd net_virtio_user (io, --tx-first) <-> testpmd net_vhost (io): frames circulate
#   back-end   testpmd net_virtio_user (io, --tx-first) <-> our back-end (VhostUserNet loopback)
#   front-end  our front-end (VhostUserNet ping, 128 frames in flight) <-> testpmd net_vhost (macswap)
#
# The testpmd figures are the median of its per-second Rx-pps (after two seconds of warm-up); the
# front-end's is the frames it got back per second, every one checked. Release build of ours.
#
#   scripts/dpdk-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
command -v dpdk-testpmd >/dev/null || { echo "dpdk-bench: install dpdk-dev (apt-get install dpdk-dev)" >&2; exit 1; }
swift build -c release --product VhostUserNet >&2
net="$(swift build -c release --show-bin-path)/VhostUserNet"
dir=$(mktemp -d /tmp/dpdk-bench-XXXXXX)
trap 'pkill -f "file-prefix=dpdkbench" 2>/dev/null || true; pkill -f "$net" 2>/dev/null || true; rm -rf "$dir"' EXIT

pmd() { # name cpu vdev testpmd-options…
    local name=$1 cpu=$2 vdev=$3
    shift 3
    (sleep 100000 | exec stdbuf -oL dpdk-testpmd --no-huge -m 256 --no-pci --file-prefix="dpdkbench$name" \
        --lcores "(0,1)@$cpu" --vdev "$vdev" -- --total-num-mbufs=8192 --stats-period 1 "$@" \
        >"$dir/$name.log" 2>&1) &
}
wait_for() { for _ in $(seq 1 600); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }
# testpmd binds its vhost socket before it listens; it listens once it forwards (stats printed).
wait_forwarding() { for _ in $(seq 1 600); do grep -aq "Port statistics" "$1" && return 0; sleep 0.1; done; echo "testpmd did not start: $1" >&2; cat "$1" >&2; exit 1; }
stop_all() {
    pkill -f "file-prefix=dpdkbench" 2>/dev/null || true
    pkill -f "$net" 2>/dev/null || true
    pkill -f "sleep 100000" 2>/dev/null || true
    sleep 1
}
median_rx() { # log: the median per-second Rx-pps after warm-up
    { grep -ao 'Rx-pps: *[0-9]*' "$1" || true; } | awk '{print $2}' | awk '$1 > 0' | tail -n +3 | sort -n |
        awk '{a[NR]=$1} END {if (NR == 0) print 0; else print a[int((NR + 1) / 2)]}'
}

pmd vhost 1 "net_vhost0,iface=$dir/a.sock,queues=1" --forward-mode=io --auto-start
wait_forwarding "$dir/vhost.log"
pmd user 0 "net_virtio_user0,path=$dir/a.sock,queues=1,queue_size=256" --forward-mode=io --tx-first --auto-start
sleep "$seconds"
baseline=$(median_rx "$dir/user.log")
stop_all

taskset -c 0 "$net" loopback --socket "$dir/b.sock" >"$dir/loopback.log" 2>&1 &
wait_for "$dir/b.sock"
pmd user2 1 "net_virtio_user0,path=$dir/b.sock,queues=1,queue_size=256" --forward-mode=io --tx-first --auto-start
sleep "$seconds"
backend=$(median_rx "$dir/user2.log")
stop_all

pmd vhost2 1 "net_vhost0,iface=$dir/c.sock,queues=1" --forward-mode=macswap --auto-start
wait_forwarding "$dir/vhost2.log"
frontend=$(taskset -c 0 "$net" ping --socket "$dir/c.sock" --frames 2000000 | tee "$dir/ping.log" |
    { grep -o '[0-9]* frames/s' || true; } | awk '{print $1}')
stop_all

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
printf '%-58s %12s %8s\n' "pairing" "frames/s" "ratio"
printf '%-58s %12s %8s\n' "testpmd virtio-user <-> testpmd vhost (baseline)" "$baseline" "1.00"
printf '%-58s %12s %8s\n' "testpmd virtio-user <-> our back-end (loopback)" "$backend" "$(ratio "$backend" "$baseline")"
printf '%-58s %12s %8s\n' "our front-end (ping, window 128) <-> testpmd vhost (macswap)" "$frontend" "$(ratio "$frontend" "$baseline")"
