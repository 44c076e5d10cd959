#!/usr/bin/env bash
# Signature-check benchmark: the same image pulled by Sealpod's image-rs from a
# private registry on 127.0.0.1 without a policy and with a sigstoreSigned
# policy (signature fetched from the sha256-<hex>.sig attachment, verified,
# payload checked) before any layer is fetched. Reports the milliseconds the
# check adds (target: <= 50 ms). Works in a scratch dir on tmpfs, removed on
# exit with everything it started. See bench/README.md for the style.
#
# Environment:
#   IMAGE_RS=PATH        our binary (default: <repo>/target/release/image-rs,
#                        or $CARGO_TARGET_DIR/release/image-rs)
#   BENCH_BUILD=1        build it with `cargo build --release -p image-rs` if missing
#   BENCH_RUNS=N         cold pulls per variant, alternating (default 5; medians reported)
#   BENCH_IMAGE_MB=N     size of the image's data layer in MiB (default 32)
#   BENCH_TMP=DIR        parent of the scratch dir (default /dev/shm)
#   BENCH_KEEP=1         keep the scratch dir
#   BENCH_JSON=FILE      also write the result as one JSON line to FILE
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
IMAGE_RS=${IMAGE_RS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/image-rs}
BENCH_BUILD=${BENCH_BUILD:-0}
RUNS=${BENCH_RUNS:-5}
IMAGE_MB=${BENCH_IMAGE_MB:-32}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_JSON=${BENCH_JSON:-}

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (file owners in the layers)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $IMAGE_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_IMAGE_MB must be a positive integer"
for t in docker-registry skopeo umoci curl tar; do
    command -v "$t" >/dev/null || die "$t is missing: run scripts/install-deps.sh"
done
if [[ ! -x $IMAGE_RS ]]; then
    [[ $BENCH_BUILD == 1 ]] || die "$IMAGE_RS not found: cargo build --release -p image-rs (or BENCH_BUILD=1)"
    (cd "$REPO_ROOT" && cargo build --release -p image-rs)
fi

S=$(mktemp -d -p "$BENCH_TMP" signature-bench.XXXXXX)
REG_PID=
cleanup() {
    trap - EXIT INT TERM
    [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    if [[ $BENCH_KEEP == 1 ]]; then log "kept $S"; else rm -rf "$S"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- registry
# shellcheck source=scripts/registry.sh
. "$REPO_ROOT/scripts/registry.sh"
start_registry "$S" || die "could not start docker-registry"
PORT=$REG_PORT
REG=127.0.0.1:$PORT
log "registry: http://$REG"

# ---------------------------------------------------------------- image
# Two layers: a small tree of text files and $IMAGE_MB MiB of incompressible data.
L=$S/layout
umoci init --layout "$L" >/dev/null
umoci new --image "$L:v1" >/dev/null
mkdir -p "$S/l1/etc" "$S/l1/usr/share/doc" "$S/l2/data"
for i in $(seq 1 200); do printf 'file %d\n%.0s' "$i" $(seq 1 50) >"$S/l1/usr/share/doc/f$i.txt"; done
echo "signature-bench" >"$S/l1/etc/hostname"
head -c $((IMAGE_MB * 1024 * 1024)) /dev/urandom >"$S/l2/data/blob.bin"
for n in 1 2; do
    tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$S/l$n" -cf "$S/l$n.tar" .
    umoci raw add-layer --image "$L:v1" "$S/l$n.tar" >/dev/null
done
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$L:v1" "docker://$REG/bench/unsigned:v1"

# ---------------------------------------------------------------- signed copy
printf 'bench passphrase\n' >"$S/pass"
"$IMAGE_RS" generate-sigstore-key --output-prefix "$S/key" --passphrase-file "$S/pass" >/dev/null
"$IMAGE_RS" copy --plain-http "docker://$REG/bench/unsigned:v1" "docker://$REG/bench/signed:v1" \
    --sign-by-sigstore-private-key "$S/key.private" --sign-passphrase-file "$S/pass" >/dev/null 2>&1
cat >"$S/policy.json" <<JSON
{"default": [{"type": "reject"}],
 "transports": {"docker": {"$REG/bench": [{"type": "sigstoreSigned", "keyPath": "$S/key.pub"}]}}}
JSON
"$IMAGE_RS" verify "$REG/bench/signed:v1" --policy "$S/policy.json" --plain-http >"$S/verify.txt"
log "$(head -1 "$S/verify.txt")"

# ---------------------------------------------------------------- runs
ms() { echo $(($(date +%s%N) / 1000000)); }
pull() { # $1 = run name, rest = extra args
    local name=$1 t0 t1
    shift
    rm -rf "$S/store-$name" "$S/rootfs-$name"
    t0=$(ms)
    "$IMAGE_RS" pull "$REG/bench/signed:v1" --plain-http --layout flat --progress none \
        --store "$S/store-$name" --rootfs "$S/rootfs-$name" "$@" >/dev/null 2>"$S/pull-$name.log" ||
        { cat "$S/pull-$name.log" >&2; die "pull $name failed"; }
    t1=$(ms)
    rm -rf "$S/store-$name" "$S/rootfs-$name"
    echo $((t1 - t0))
}
verify_only() {
    local t0 t1
    t0=$(ms)
    "$IMAGE_RS" verify "$REG/bench/signed:v1" --plain-http --policy "$S/policy.json" >/dev/null
    t1=$(ms)
    echo $((t1 - t0))
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

pull warmup >/dev/null
plain=() checked=() verify=()
for ((r = 1; r <= RUNS; r++)); do
    plain+=("$(pull plain)")
    checked+=("$(pull checked --policy "$S/policy.json")")
    verify+=("$(verify_only)")
done
P=$(printf '%s\n' "${plain[@]}" | median)
C=$(printf '%s\n' "${checked[@]}" | median)
V=$(printf '%s\n' "${verify[@]}" | median)
ADDED=$((C - P))
printf '\n%-34s %10s   %s\n' "variant" "median ms" "runs (ms)"
printf '%-34s %10d   %s\n' "pull, no policy" "$P" "${plain[*]}"
printf '%-34s %10d   %s\n' "pull, sigstoreSigned policy" "$C" "${checked[*]}"
printf '%-34s %10d   %s\n' "verify only (no layers)" "$V" "${verify[*]}"
printf '%-34s %10d   %s\n' "added by the signature check" "$ADDED" "(target <= 50 ms)"
json=$(printf '{"bench":"signature","image_mb":%d,"runs":%d,"pull_ms":%d,"pull_with_policy_ms":%d,"verify_ms":%d,"added_ms":%d}' \
    "$IMAGE_MB" "$RUNS" "$P" "$C" "$V" "$ADDED")
echo "$json"
[[ -n $BENCH_JSON ]] && echo "$json" >>"$BENCH_JSON"
exit 0
