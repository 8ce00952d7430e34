#!/usr/bin/env bash
# Scale-out benchmark: the distributed Mandelbrot job (grains-example) on N = 1..5
# slaves, each slave in its own cgroup (v1 `cpu` controller) with the same CPU quota,
# so N slaves are N equally resourced nodes. The master and the client run outside the
# quotas. Reports T(N) (median of RUNS runs), S(N) = T(1)/T(N) and S(N)/N.
#
#   sudo bash bench/scaleout.sh                       # defaults below
#   QUOTA=0.3 RUNS=3 MAX_N=5 WIDTH=1600 HEIGHT=1200 MAX_ITER=6000 bash bench/scaleout.sh
#   CPU=taskset MAX_N=2 bash bench/scaleout.sh         # the fallback, see below
#
# CPU=cgroup (the default when /sys/fs/cgroup/cpu is writable: root, cgroup v1) creates
# /sys/fs/cgroup/cpu/granary-scaleout-*. CPU=taskset (the fallback, chosen by itself
# when the cgroup is not writable) pins slave s to core s mod nproc instead: one whole
# core per slave, so only N <= nproc slaves are equal nodes (MAX_N defaults to nproc
# there, and the master and client share the cores). Builds the release `silo` and
# `client` of grains-example first (in the workspace's target directory). Writes the
# table to stdout and to bench/results/scaleout-<unix time>.md.
#
# Quota: QUOTA CPUs per slave (cpu.cfs_quota_us = QUOTA × cpu.cfs_period_us). Keep
# MAX_N × QUOTA below the cores the machine can spare (on a 2-core machine 5 × 0.3 =
# 1.5 cores, leaving room for the master, the client and the kernel), or the slaves
# compete for cores and N slaves are no longer N equal nodes.
set -euo pipefail

cg=/sys/fs/cgroup/cpu
if [[ -z ${CPU:-} ]]; then
    if [[ -w $cg ]]; then CPU=cgroup; else CPU=taskset; fi
fi
case $CPU in
    cgroup) [[ -w $cg ]] || { echo "scaleout: $cg is not writable (run as root, cgroup v1 cpu; or CPU=taskset)" >&2; exit 1; } ;;
    taskset) command -v taskset >/dev/null || { echo "scaleout: no taskset (util-linux) and no writable $cg" >&2; exit 1; } ;;
    *) echo "scaleout: CPU=$CPU: cgroup or taskset" >&2; exit 1 ;;
esac
cores=$(nproc)
QUOTA=${QUOTA:-0.3}
RUNS=${RUNS:-3}
if [[ $CPU == cgroup ]]; then MAX_N=${MAX_N:-5}; else MAX_N=${MAX_N:-$cores}; fi
WIDTH=${WIDTH:-1600}
HEIGHT=${HEIGHT:-1200}
MAX_ITER=${MAX_ITER:-6000}
BANDS=${BANDS:-300}
WORKERS=${WORKERS:-15}

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ $CPU == taskset ]] && ((MAX_N > cores)); then
    echo "scaleout: warning: CPU=taskset with MAX_N=$MAX_N > $cores cores: slaves beyond $cores share cores, so S(N) cannot grow past $cores" >&2
fi

(cd "$root" && cargo build --quiet --release -p granary-example --bin silo --bin client)
silo=$root/target/release/silo
client=$root/target/release/client

work=$(mktemp -d /tmp/granary-scaleout.XXXXXX)
pids=()
groups=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

if [[ $CPU == cgroup ]]; then
    period=$(cat $cg/cpu.cfs_period_us)
    quota_us=$(awk -v q="$QUOTA" -v p="$period" 'BEGIN { printf "%d", q * p }')
fi

free_port() { # a free TCP or UDP port on 127.0.0.1
    python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=='tcp' else socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

wait_for() { # FILE NEEDLE SECONDS
    local deadline=$((SECONDS + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "scaleout: no '$2' in $1 after $3 s" >&2; tail -20 "$1" >&2; exit 1; }
        sleep 0.1
    done
}

# One cluster of n slaves; writes the job's wall time of each run (seconds, one per
# line) to $work/runs-n.
measure() {
    local n=$1
    local mtcp mudp
    mtcp=$(free_port tcp); mudp=$(free_port udp)
    RUST_LOG=warn,granary_silo::membership=info "$silo" --role master --listen 127.0.0.1:$mtcp \
        --udp 127.0.0.1:$mudp --storage memory >"$work/master-$n.log" 2>&1 &
    pids+=($!)
    for ((s = 0; s < n; s++)); do
        local stcp sudp
        stcp=$(free_port tcp); sudp=$(free_port udp)
        local slave=("$silo" --role slave --listen 127.0.0.1:$stcp --udp 127.0.0.1:$sudp
            --master 127.0.0.1:$mudp)
        if [[ $CPU == cgroup ]]; then
            local g=$cg/granary-scaleout-$$-$s
            [[ -d $g ]] || mkdir "$g"
            groups+=("$g")
            echo "$quota_us" >"$g/cpu.cfs_quota_us"
            # The slave enters its cgroup before exec, so every thread it starts is in it.
            RUST_LOG=warn,granary_silo::membership=info sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' \
                sh "$g" "${slave[@]}" >"$work/slave-$n-$s.log" 2>&1 &
        else
            RUST_LOG=warn,granary_silo::membership=info taskset -c $((s % cores)) \
                "${slave[@]}" >"$work/slave-$n-$s.log" 2>&1 &
        fi
        pids+=($!)
    done
    for ((s = 0; s < n; s++)); do wait_for "$work/slave-$n-$s.log" "joined the master" 30; done
    # A warm-up job (activations, connections), then the measured runs.
    "$client" --gateway 127.0.0.1:$mtcp mandelbrot --width 160 --height 120 --max-iter 100 \
        --quiet --out "$work/warm.png" >/dev/null
    for ((r = 0; r < RUNS; r++)); do
        "$client" --gateway 127.0.0.1:$mtcp mandelbrot --width "$WIDTH" --height "$HEIGHT" \
            --max-iter "$MAX_ITER" --bands "$BANDS" --workers "$WORKERS" --quiet \
            --out "$work/m.png" | sed -E 's/.* in ([0-9.]+) s .*/\1/' >>"$work/runs-$n"
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

results=$root/bench/results/scaleout-$(date +%s).md
{
    echo "Mandelbrot ${WIDTH}x${HEIGHT}, max_iter $MAX_ITER, $BANDS bands, $WORKERS workers;"
    if [[ $CPU == cgroup ]]; then
        echo "each slave limited to $QUOTA CPU (cfs_quota_us $quota_us / period $period);"
    else
        echo "slave s pinned to core s mod $cores (taskset; the master and the client unpinned);"
    fi
    echo "median of $RUNS runs; $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)."
    echo
    echo "| N | T(N) s (runs) | S(N) | S(N)/N |"
    echo "|---|---|---|---|"
} | tee "$results"
t1=
for ((n = 1; n <= MAX_N; n++)); do
    measure "$n"
    runs=$(cat "$work/runs-$n")
    t=$(echo "$runs" | median)
    [[ -n $t1 ]] || t1=$t
    echo "$runs" | tr '\n' ' ' >"$work/runs"
    awk -v n="$n" -v t="$t" -v t1="$t1" -v runs="$(cat "$work/runs")" \
        'BEGIN { s = t1 / t; printf "| %d | %.2f (%s) | %.2f | %.2f |\n", n, t, runs, s, s / n }' |
        tee -a "$results"
done
echo "written to $results" >&2
