#!/usr/bin/env bash
# Agent benchmark: Sealpod's guest-agent (ttrpc on a unix socket, containers
# through youki's libcontainer in-process, images pulled by image-rs) measured
# three ways, with the figures side by side in one run:
#   1. Health.Check round trip (1 connection: p50/p99/mean; N connections: throughput)
#   2. CreateContainer+StartContainer+WaitProcess of /bin/true on an image already in
#      the agent's store (and RemoveContainer apart) against `runc run` of the same
#      rootfs (umoci unpack) with a `runc spec` config
#   3. the agent's VmRSS/VmHWM idle and while 10 containers run `sleep 30`
# The measuring is done by agent/examples/agent_bench.rs; this script sets up a private
# registry on 127.0.0.1, a busybox image, the agent and the runc bundles in a scratch
# directory on tmpfs, and removes all of it on exit. Targets are printed next to the
# figures, never enforced. See bench/README.md.
#
# Environment:
#   GUEST_AGENT=PATH     the agent (default <repo>/target/release/guest-agent,
#                        or $CARGO_TARGET_DIR/release/guest-agent)
#   AGENT_BENCH=PATH     the helper (default .../release/examples/agent_bench)
#   BENCH_BUILD=1        build both with
#                        `cargo build --release -p agent --example agent_bench --bins`
#   BENCH_CHECK_N=N      measured Check calls per connection (default 10000)
#   BENCH_CHECK_WARMUP=N unmeasured Check calls per connection first (default 500)
#   BENCH_CHECK_CONNS=N  connections of the throughput run (default 4)
#   BENCH_RUNS=N         measured container runs per contender (default 20)
#   BENCH_HOLD=N         containers running `sleep 30` for the RSS figure (default 10)
#   BENCH_POLICY=FILE    start the agent with --policy FILE (default: none, allow all)
#   BENCH_TMP=DIR        parent of the scratch dir (default /dev/shm)
#   BENCH_KEEP=1         keep the scratch dir (processes and mounts are still cleaned)
#   BENCH_JSON=FILE      also write the results as one JSON object to FILE
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
GUEST_AGENT=${GUEST_AGENT:-$TARGET_DIR/release/guest-agent}
AGENTCTL=$(dirname "$GUEST_AGENT")/agentctl
AGENT_BENCH=${AGENT_BENCH:-$TARGET_DIR/release/examples/agent_bench}
BENCH_BUILD=${BENCH_BUILD:-0}
CHECK_N=${BENCH_CHECK_N:-10000}
CHECK_WARMUP=${BENCH_CHECK_WARMUP:-500}
CHECK_CONNS=${BENCH_CHECK_CONNS:-4}
RUNS=${BENCH_RUNS:-20}
HOLD=${BENCH_HOLD:-10}
BENCH_POLICY=${BENCH_POLICY:-}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_JSON=${BENCH_JSON:-}

# Targets (printed, not enforced).
T_CHECK_P50_US=100
T_IDLE_RSS_MIB=10
T_RUNC_RATIO=1.00

log() { printf '==> %s\n' "$*"; }
skip() { printf -- '--> skipped: %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

for v in CHECK_N CHECK_WARMUP CHECK_CONNS RUNS HOLD; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a non-negative integer, got '${!v}'"
done
((CHECK_N > 0 && CHECK_CONNS > 0 && RUNS > 0)) || die "BENCH_CHECK_N, BENCH_CHECK_CONNS and BENCH_RUNS must be > 0"
[[ -z $BENCH_POLICY || -r $BENCH_POLICY ]] || die "BENCH_POLICY: cannot read $BENCH_POLICY"
[[ -n $BENCH_POLICY ]] && BENCH_POLICY=$(realpath "$BENCH_POLICY")

ROOT=0
[[ $(id -u) -eq 0 ]] && ROOT=1

# ---------------------------------------------------------------- binaries
if [[ ! -x $GUEST_AGENT || ! -x $AGENT_BENCH || ! -x $AGENTCTL ]]; then
    if [[ $BENCH_BUILD == 1 ]]; then
        log "building: cargo build --release -p agent --example agent_bench --bins"
        (cd "$REPO_ROOT" && cargo build --release -p agent --example agent_bench --bins)
    else
        die "missing $GUEST_AGENT, $AGENTCTL or $AGENT_BENCH: run \`cargo build --release -p agent --example agent_bench --bins\` (or BENCH_BUILD=1)"
    fi
fi

# ---------------------------------------------------------------- tools
# The containers part needs root (mounts, namespaces, cgroups) and the tools of
# scripts/install-deps.sh (registry, skopeo, umoci, busybox-static, jq, curl);
# runc, the baseline, is installed here if missing.
CONTAINERS=0
HAVE_RUNC=0
if ((ROOT)); then
    "$REPO_ROOT/scripts/install-deps.sh"
    CONTAINERS=1
    if ! command -v runc >/dev/null 2>&1; then
        log "installing runc (apt-get install -y runc)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends runc >/dev/null 2>&1; then
            apt-get update -qq || true
            apt-get install -y -qq --no-install-recommends runc >/dev/null || warn "could not install runc"
        fi
    fi
    command -v runc >/dev/null 2>&1 && HAVE_RUNC=1
else
    skip "container lifecycle, runc and RSS with containers: not root (only the Check and idle RSS figures follow)"
fi
((ROOT == 0 || HAVE_RUNC)) || skip "runc baseline: runc is not installed"
command -v jq >/dev/null 2>&1 || die "jq is needed (scripts/install-deps.sh installs it, as root)"

# ---------------------------------------------------------------- scratch + cleanup
WORK=$(mktemp -d -p "$BENCH_TMP" agent-bench.XXXXXX)
WORK=$(realpath "$WORK")
PREFIX=abench-$$
SOCK=$WORK/agent.sock
ADDR=unix://$SOCK
RUNC_ROOT=$WORK/runc-root
AGENT_PID=
REG_PID=
R=$WORK/results
mkdir -p "$R"

stop_pid() { # TERM, then KILL after 10 s
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

mounts_under() { # mount points at or below $1, deepest first
    awk -v r="$1" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}

cleanup() {
    local rc=$? p m id left
    set +e
    trap - EXIT INT TERM
    # The agent's containers: DestroySandbox removes them all (kill, delete, unmount).
    if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
        timeout 30 "$AGENT_BENCH" destroy --addr "$ADDR" >/dev/null 2>&1
    fi
    stop_pid "$AGENT_PID"
    # runc containers left by an interrupted run.
    if [[ -d $RUNC_ROOT ]]; then
        for id in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do
            runc --root "$RUNC_ROOT" delete -f "$id" >/dev/null 2>&1
        done
    fi
    # Anything still running in one of our containers' cgroups (IDs start with $PREFIX).
    for p in /proc/[0-9]*; do
        grep -qs -- "/$PREFIX-" "$p/cgroup" && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    stop_pid "$REG_PID"
    for m in $(mounts_under "$WORK"); do
        umount -R -l "$m" 2>/dev/null || ! mountpoint -q "$m" || warn "could not unmount $m"
    done
    # Empty cgroups of our containers (agent: /sealpod/ID; runc: /ID).
    if ((ROOT)); then
        find /sys/fs/cgroup -maxdepth 4 -depth -type d -name "$PREFIX-*" -exec rmdir {} + 2>/dev/null
    fi
    left=$(mounts_under "$WORK")
    if [[ -n $left ]]; then
        warn "still mounted under $WORK, not removing it: $left"
    elif [[ $BENCH_KEEP == 1 ]]; then
        log "scratch kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

kv() { # FILE KIND KEY: the value of KEY on the first KIND line of FILE (empty if none)
    [[ -r $1 ]] || return 0
    awk -v k="$2" -v key="$3" '$1 == k { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == key) { print substr($i, length(key) + 2); exit } } }' "$1"
}
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}' || printf -- '-'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a <= b)}'; }
verdict() { if [[ -z $1 ]]; then printf -- '-'; elif le "$1" "$2"; then printf met; else printf MISSED; fi; }

# ---------------------------------------------------------------- machine
echo
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) CPUs, $(uname -srm), $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), load average $LOAD_START"
log "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
log "agent: $GUEST_AGENT ($("$GUEST_AGENT" --version 2>/dev/null)); scratch: $WORK"
((HAVE_RUNC)) && log "runc: $(runc --version | head -1), cgroups: $( [[ -f /sys/fs/cgroup/cgroup.controllers ]] && echo v2 || echo v1/hybrid)"

# ---------------------------------------------------------------- image + registry
if ((CONTAINERS)); then
    # shellcheck source=scripts/registry.sh
    . "$REPO_ROOT/scripts/registry.sh"
    start_registry "$WORK" || die "could not start docker-registry"
    PORT=$REG_PORT
    REF=127.0.0.1:$PORT/bench/busybox:v1
    log "registry: http://127.0.0.1:$PORT (pid $REG_PID)"

    # One layer: static busybox, the applets the runs use, /etc/passwd and /etc/group.
    (
        cd "$WORK"
        umoci init --layout oci
        umoci new --image oci:bench
        umoci unpack --image oci:bench build >/dev/null
        mkdir -p build/rootfs/{bin,etc,tmp,root,proc,sys,dev}
        chmod 1777 build/rootfs/tmp
        cp "$(command -v busybox)" build/rootfs/bin/busybox
        for a in sh true sleep cat echo ls; do ln -s busybox "build/rootfs/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >build/rootfs/etc/passwd
        printf 'root:x:0:\nnogroup:x:65534:\n' >build/rootfs/etc/group
        umoci repack --image oci:bench build
        umoci config --image oci:bench --config.cmd /bin/sh >/dev/null
        rm -rf build
    ) >/dev/null
    skopeo copy -q --dest-tls-verify=false --digestfile "$WORK/digest" oci:"$WORK/oci:bench" "docker://$REF"
    DIGEST=$(cat "$WORK/digest")
    REF_PINNED=127.0.0.1:$PORT/bench/busybox@$DIGEST
    log "image: $REF ($DIGEST), $(du -sb "$WORK/oci/blobs" | awk '{printf "%.1f MB of blobs", $1/1e6}')"

    if ((HAVE_RUNC)); then
        # runc bundles from the same image: `umoci unpack` for the rootfs, `runc spec` for
        # the config (args /bin/true, no terminal). "as agent": the namespaces the agent
        # gives a container (pid, ipc, uts, mount: the network namespace is the sandbox's,
        # as in Kata) and a writable root; "spec": runc spec's own (+ network, read-only root).
        umoci unpack --image "$WORK/oci:bench" "$WORK/runc-spec" >/dev/null
        rm "$WORK/runc-spec/config.json"
        (cd "$WORK/runc-spec" && runc spec)
        jq '.process.args = ["/bin/true"] | .process.terminal = false' "$WORK/runc-spec/config.json" >"$WORK/spec.json"
        mv "$WORK/spec.json" "$WORK/runc-spec/config.json"
        mkdir -p "$WORK/runc-agent/rootfs" "$WORK/runc-ovl/rootfs" "$WORK/ovl-scratch"
        jq '.root.readonly = false | .linux.namespaces |= map(select(.type != "network"))' \
            "$WORK/runc-spec/config.json" >"$WORK/runc-agent/config.json"
        cp "$WORK/runc-agent/config.json" "$WORK/runc-ovl/config.json"
        # the same rootfs, bind-mounted read-write (one copy of the files for both bundles)
        mount --bind "$WORK/runc-spec/rootfs" "$WORK/runc-agent/rootfs"
    fi
fi

# ---------------------------------------------------------------- agent
mkdir -p "$WORK/state"
agent_args=(--server-addr "$ADDR" --state-dir "$WORK/state" --cmdline-file /dev/null --log-level warn)
[[ -n $BENCH_POLICY ]] && agent_args+=(--policy "$BENCH_POLICY")
# In its own session, so that Ctrl-C reaches only this script: the trap then removes the
# containers through the agent (DestroySandbox) before stopping it.
setsid "$GUEST_AGENT" "${agent_args[@]}" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ -S $SOCK ]] && break
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent.log" >&2; die "guest-agent exited"; }
    sleep 0.05
done
"$AGENTCTL" --addr "$ADDR" check >/dev/null || { cat "$WORK/agent.log" >&2; die "Check failed"; }
IDLE_RSS=$(status_kb "$AGENT_PID" VmRSS)
IDLE_HWM=$(status_kb "$AGENT_PID" VmHWM)
log "guest-agent pid $AGENT_PID on $ADDR${BENCH_POLICY:+ with policy $BENCH_POLICY}: idle VmRSS $(mib "$IDLE_RSS") MiB, VmHWM $(mib "$IDLE_HWM") MiB"

fail() { # WHAT FILE: show why a helper run failed
    warn "$1 failed:"
    sed 's/^/    /' "$2" >&2
    tail -n 20 "$WORK/agent.log" | sed 's/^/    agent: /' >&2
}

# ---------------------------------------------------------------- 1. Check
log "Check: $CHECK_N calls after $CHECK_WARMUP warm-up, 1 connection, then $CHECK_CONNS connections"
"$AGENT_BENCH" check-latency --addr "$ADDR" --n "$CHECK_N" --warmup "$CHECK_WARMUP" --conns 1 >"$R/check1" 2>"$R/check1.err" ||
    fail "Check, 1 connection" "$R/check1.err"
"$AGENT_BENCH" check-latency --addr "$ADDR" --n "$CHECK_N" --warmup "$CHECK_WARMUP" --conns "$CHECK_CONNS" >"$R/checkN" 2>"$R/checkN.err" ||
    fail "Check, $CHECK_CONNS connections" "$R/checkN.err"
CHECKED_RSS=$(status_kb "$AGENT_PID" VmRSS)
CHECKED_HWM=$(status_kb "$AGENT_PID" VmHWM)

# ---------------------------------------------------------------- 2. lifecycle
if ((CONTAINERS)); then
    log "containers: /bin/true, 1 warm-up (pulls the image into the empty store), then $RUNS runs each"
    "$AGENT_BENCH" lifecycle --addr "$ADDR" --image "$REF_PINNED" --n "$RUNS" --warmup 1 \
        --id-prefix "$PREFIX-d" --label digest >"$R/lc-digest" 2>"$R/lc-digest.err" ||
        fail "agent lifecycle (digest reference)" "$R/lc-digest.err"
    "$AGENT_BENCH" lifecycle --addr "$ADDR" --image "$REF" --n "$RUNS" --warmup 1 \
        --id-prefix "$PREFIX-t" --label tag >"$R/lc-tag" 2>"$R/lc-tag.err" ||
        fail "agent lifecycle (tag reference)" "$R/lc-tag.err"
    if ((HAVE_RUNC)); then
        mkdir -p "$RUNC_ROOT"
        "$AGENT_BENCH" exec-latency --n "$RUNS" --warmup 1 --id-prefix "$PREFIX-ra" --label runc-agent \
            -- runc --root "$RUNC_ROOT" run -b "$WORK/runc-agent" '{id}' >"$R/runc-agent" 2>"$R/runc-agent.err" ||
            fail "runc run (as agent)" "$R/runc-agent.err"
        "$AGENT_BENCH" exec-latency --n "$RUNS" --warmup 1 --id-prefix "$PREFIX-rs" --label runc-spec \
            -- runc --root "$RUNC_ROOT" run -b "$WORK/runc-spec" '{id}' >"$R/runc-spec" 2>"$R/runc-spec.err" ||
            fail "runc run (runc spec)" "$R/runc-spec.err"
        "$AGENT_BENCH" exec-latency --n "$RUNS" --warmup 1 --id-prefix "$PREFIX-ro" --label runc-overlay \
            --overlay-lower "$WORK/runc-spec/rootfs" --overlay-target "$WORK/runc-ovl/rootfs" \
            --overlay-scratch "$WORK/ovl-scratch" \
            -- runc --root "$RUNC_ROOT" run -b "$WORK/runc-ovl" '{id}' >"$R/runc-ovl" 2>"$R/runc-ovl.err" ||
            fail "runc run (overlay)" "$R/runc-ovl.err"
    fi
fi

# ---------------------------------------------------------------- 3. RSS with containers
if ((CONTAINERS && HOLD > 0)); then
    log "RSS: $HOLD containers running sleep 30 (VmHWM reset first)"
    echo 5 >"/proc/$AGENT_PID/clear_refs" 2>/dev/null || warn "could not reset VmHWM (clear_refs): it is the peak since the start"
    "$AGENT_BENCH" hold --addr "$ADDR" --image "$REF_PINNED" --n "$HOLD" --pid "$AGENT_PID" \
        --id-prefix "$PREFIX-h" -- sleep 30 >"$R/hold" 2>"$R/hold.err" ||
        fail "$HOLD containers" "$R/hold.err"
fi

# ---------------------------------------------------------------- report
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo
log "load average at start: $LOAD_START, at end: $LOAD_END"
awk -v a="${LOAD_START%% *}" 'BEGIN{exit !(a >= 1)}' && warn "the machine was busy at the start (load average above): timings are not clean"

line() { printf '%-58s | %-30s | %-22s\n' "$@"; }
sep() { printf '%s\n' "-----------------------------------------------------------+--------------------------------+-----------------------"; }

echo
line "ttrpc Health.Check over the unix socket" "figure" "target"
sep
C1_P50=$(kv "$R/check1" check rtt_p50_us)
if [[ -n $C1_P50 ]]; then
    line "1 connection, $CHECK_N sequential calls: p50" "$C1_P50 us" "p50 <= $T_CHECK_P50_US us: $(verdict "$C1_P50" "$T_CHECK_P50_US")"
    line "  p90 / p99 / mean" "$(kv "$R/check1" check rtt_p90_us) / $(kv "$R/check1" check rtt_p99_us) / $(kv "$R/check1" check rtt_mean_us) us" ""
    line "  min / max" "$(kv "$R/check1" check rtt_min_us) / $(kv "$R/check1" check rtt_max_us) us" ""
    line "  throughput" "$(kv "$R/check1" check calls_per_s) calls/s" ""
else
    line "1 connection" FAILED ""
fi
if [[ -n $(kv "$R/checkN" check calls_per_s) ]]; then
    line "$CHECK_CONNS connections x $CHECK_N calls: throughput" "$(kv "$R/checkN" check calls_per_s) calls/s" \
        "x$(ratio "$(kv "$R/checkN" check calls_per_s)" "$(kv "$R/check1" check calls_per_s)") of 1 connection"
    line "  p50 / p99 / mean" "$(kv "$R/checkN" check rtt_p50_us) / $(kv "$R/checkN" check rtt_p99_us) / $(kv "$R/checkN" check rtt_mean_us) us" ""
else
    line "$CHECK_CONNS connections" FAILED ""
fi

RATIO=
RATIO_RM=
if ((CONTAINERS)); then
    echo
    cline() { printf '%-58s | %9s | %9s | %8s\n' "$@"; }
    csep() { printf '%s\n' "-----------------------------------------------------------+-----------+-----------+---------"; }
    BASE=$(kv "$R/runc-agent" exec run_p50_ms)
    cline "/bin/true in a container, $RUNS runs (ms)" median p90 "/ runc"
    csep
    for l in digest tag; do
        f=$R/lc-$l
        what="by digest (all in the store)"
        [[ $l == tag ]] && what="by tag (+ manifest GET)"
        if [[ -z $(kv "$f" lifecycle to_exit_p50_ms) ]]; then
            cline "agent, $what" FAILED "" ""
            continue
        fi
        p50=$(kv "$f" lifecycle to_exit_p50_ms)
        cline "agent Create+Start+Wait, $what" "$p50" "$(kv "$f" lifecycle to_exit_p90_ms)" "$(ratio "$p50" "$BASE")"
        cline "  CreateContainer (overlay mount, bundle, init)" "$(kv "$f" lifecycle create_p50_ms)" "$(kv "$f" lifecycle create_p90_ms)" ""
        cline "  StartContainer" "$(kv "$f" lifecycle start_p50_ms)" "$(kv "$f" lifecycle start_p90_ms)" ""
        cline "  WaitProcess (with ReadStdout/ReadStderr to EOF)" "$(kv "$f" lifecycle wait_p50_ms)" "$(kv "$f" lifecycle wait_p90_ms)" ""
        cline "  RemoveContainer (apart)" "$(kv "$f" lifecycle remove_p50_ms)" "$(kv "$f" lifecycle remove_p90_ms)" ""
        rm50=$(kv "$f" lifecycle with_remove_p50_ms)
        cline "  Create+Start+Wait+Remove" "$rm50" "$(kv "$f" lifecycle with_remove_p90_ms)" "$(ratio "$rm50" "$BASE")"
        if [[ $l == digest ]]; then
            RATIO=$(ratio "$p50" "$BASE")
            RATIO_RM=$(ratio "$rm50" "$BASE")
        fi
    done
    w=$(kv "$R/lc-digest" lifecycle_warmup to_exit_ms)
    [[ -n $w ]] && cline "agent, first run: image pulled into the empty store" "$w" "(1 run)" ""
    if ((HAVE_RUNC)); then
        for l in agent spec ovl; do
            case $l in
            agent) what="runc run, same rootfs, runc spec as the agent (baseline)" ;;
            spec) what="runc run, runc spec as is (+ netns, read-only root)" ;;
            ovl) what="runc run on a fresh overlay (mkdir, mount, run, umount)" ;;
            esac
            p50=$(kv "$R/runc-$l" exec run_p50_ms)
            if [[ -n $p50 ]]; then
                cline "$what" "$p50" "$(kv "$R/runc-$l" exec run_p90_ms)" "$(ratio "$p50" "$BASE")"
            else
                cline "$what" FAILED "" ""
            fi
        done
    else
        cline "runc run" skipped "" ""
    fi
    echo "  agent: in-process timing around the ttrpc calls (helper on the same socket); runc: fork+exec of \`runc run\` to its exit"
    echo "  (runc run creates, starts, waits and deletes). '/ runc': median over the baseline's median."
    if [[ -n $RATIO && $RATIO != - ]]; then
        log "agent / runc (Create+Start+Wait over runc run, medians): $RATIO, with RemoveContainer: $RATIO_RM; target <= $T_RUNC_RATIO (no slower than runc): $(verdict "$RATIO" "$T_RUNC_RATIO"), with Remove: $(verdict "$RATIO_RM" "$T_RUNC_RATIO")"
    fi
fi

echo
printf '%-58s | %9s | %9s | %-22s\n' "guest-agent memory (/proc/PID/status)" "VmRSS MiB" "VmHWM MiB" target
printf '%s\n' "-----------------------------------------------------------+-----------+-----------+-----------------------"
printf '%-58s | %9s | %9s | %-22s\n' "idle (after start + one Check)" "$(mib "$IDLE_RSS")" "$(mib "$IDLE_HWM")" \
    "<= $T_IDLE_RSS_MIB MiB: $(verdict "$(mib "$IDLE_RSS")" "$T_IDLE_RSS_MIB")"
printf '%-58s | %9s | %9s | %-22s\n' "after the Check runs" "$(mib "$CHECKED_RSS")" "$(mib "$CHECKED_HWM")" ""
HOLD_RSS=
HOLD_HWM=
if ((CONTAINERS && HOLD > 0)); then
    HOLD_RSS=$(kv "$R/hold" hold vmrss_kb)
    HOLD_HWM=$(kv "$R/hold" hold vmhwm_kb)
    if [[ -n $HOLD_RSS ]]; then
        printf '%-58s | %9s | %9s | %-22s\n' "$HOLD containers running sleep 30 (HWM: peak since the reset)" "$(mib "$HOLD_RSS")" "$(mib "$HOLD_HWM")" ""
        printf '%-58s | %9s | %9s | %-22s\n' "after removing them" "$(mib "$(kv "$R/hold" hold_removed vmrss_kb)")" "$(mib "$(kv "$R/hold" hold_removed vmhwm_kb)")" ""
        echo "  creating and starting the $HOLD took $(kv "$R/hold" hold start_all_ms) ms, removing them $(kv "$R/hold" hold_removed remove_all_ms) ms"
    else
        printf '%-58s | %9s |\n' "$HOLD containers running sleep 30" FAILED
    fi
fi
echo "  the agent's own process only: container processes (forked by libcontainer) are not counted"

# ---------------------------------------------------------------- JSON
num() { [[ -n ${1:-} && $1 != - ]] && echo "$1" || echo null; }
JSON=$(jq -cn \
    --argjson nproc "$(nproc)" --arg kernel "$(uname -r)" --arg ls "$LOAD_START" --arg le "$LOAD_END" \
    --argjson c1p50 "$(num "$C1_P50")" --argjson c1p99 "$(num "$(kv "$R/check1" check rtt_p99_us)")" \
    --argjson c1mean "$(num "$(kv "$R/check1" check rtt_mean_us)")" --argjson c1tp "$(num "$(kv "$R/check1" check calls_per_s)")" \
    --argjson conns "$CHECK_CONNS" --argjson cNtp "$(num "$(kv "$R/checkN" check calls_per_s)")" \
    --argjson cNp50 "$(num "$(kv "$R/checkN" check rtt_p50_us)")" --argjson cNp99 "$(num "$(kv "$R/checkN" check rtt_p99_us)")" \
    --argjson runs "$RUNS" \
    --argjson agent50 "$(num "$(kv "$R/lc-digest" lifecycle to_exit_p50_ms)")" \
    --argjson agent90 "$(num "$(kv "$R/lc-digest" lifecycle to_exit_p90_ms)")" \
    --argjson rm50 "$(num "$(kv "$R/lc-digest" lifecycle remove_p50_ms)")" \
    --argjson tag50 "$(num "$(kv "$R/lc-tag" lifecycle to_exit_p50_ms)")" \
    --argjson runc50 "$(num "$(kv "$R/runc-agent" exec run_p50_ms)")" \
    --argjson runcspec50 "$(num "$(kv "$R/runc-spec" exec run_p50_ms)")" \
    --argjson runcovl50 "$(num "$(kv "$R/runc-ovl" exec run_p50_ms)")" \
    --argjson ratio "$(num "$RATIO")" --argjson ratio_rm "$(num "$RATIO_RM")" \
    --argjson idle_rss "$(num "$IDLE_RSS")" --argjson idle_hwm "$(num "$IDLE_HWM")" \
    --argjson hold "$HOLD" --argjson hold_rss "$(num "$HOLD_RSS")" --argjson hold_hwm "$(num "$HOLD_HWM")" \
    '{machine: {nproc: $nproc, kernel: $kernel, loadavg_start: $ls, loadavg_end: $le},
      check: {one_conn: {p50_us: $c1p50, p99_us: $c1p99, mean_us: $c1mean, calls_per_s: $c1tp, target_p50_us: 100},
              conns: $conns, many_conns: {calls_per_s: $cNtp, p50_us: $cNp50, p99_us: $cNp99}},
      lifecycle: {runs: $runs, agent_create_start_wait_ms: {p50: $agent50, p90: $agent90}, agent_remove_p50_ms: $rm50,
                  agent_by_tag_p50_ms: $tag50, runc_run_p50_ms: $runc50, runc_spec_as_is_p50_ms: $runcspec50,
                  runc_overlay_p50_ms: $runcovl50, agent_over_runc: $ratio, agent_with_remove_over_runc: $ratio_rm, target_ratio: 1.0},
      rss_kib: {idle: {vmrss: $idle_rss, vmhwm: $idle_hwm, target_mib: 10}, containers: $hold, with_containers: {vmrss: $hold_rss, vmhwm: $hold_hwm}}}')
echo
log "JSON:"
echo "$JSON"
[[ -n $BENCH_JSON ]] && printf '%s\n' "$JSON" >"$BENCH_JSON"
exit 0
