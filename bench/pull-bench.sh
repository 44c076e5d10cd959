#!/usr/bin/env bash
# Pull benchmark: Sealpod's image-rs against Confidential Containers' image-rs,
# skopeo+umoci, containerd (ctr) and a decompress+digest / tar-extract floor.
# Everything runs against a private registry on 127.0.0.1, inside a scratch
# directory on tmpfs that is removed on exit. See bench/README.md.
#
# Environment:
#   IMAGE_RS=PATH           our binary (default: <repo>/target/release/image-rs,
#                           or $CARGO_TARGET_DIR/release/image-rs)
#   BENCH_BUILD=1           build it with `cargo build --release -p image-rs` if missing
#   BENCH_IMAGE_SCALE=F     image size factor (default 1 = ~500 MB; 0.1 for a smoke run)
#   BENCH_RUNS=N            cold runs per contender (default 3; median is reported)
#   BENCH_ONLY=LIST         comma list of contenders to run, from
#                           ours,coco,skopeo,containerd,floor (default: all)
#   COCO_BENCH=PATH         CoCo image-rs bench binary, .xz or plain
#                           (default: <repo>/../shared/peers/coco-image-rs-bench.xz)
#   BENCH_TMP=DIR           parent of the scratch dir (default /dev/shm)
#   BENCH_KEEP=1            keep the scratch dir (processes and mounts are still cleaned)
#   BENCH_JSON=FILE         also copy the JSON-lines results to FILE
#   BENCH_ENCRYPTED=1       encrypted-image mode: also push the image encrypted by skopeo
#                           (JWE, RSA) as :enc and pull it; contenders then are
#                           ours,ours-enc,coco,coco-enc,skopeo,skopeo-enc (containerd and
#                           floor only if named in BENCH_ONLY); adds a "/ plain" ratio and
#                           the AES-CTR / HMAC throughput of `openssl speed`
#   BENCH_KEYS=DIR          keys for BENCH_ENCRYPTED (default:
#                           <repo>/../shared/vectors/ocicrypt/keys); BENCH_ENC_PUB and
#                           BENCH_ENC_PRIV override the files (rsa-pub.pem, rsa-priv.pem)
#   BENCH_CRYPTO_SPEED=1    with BENCH_ENCRYPTED=1: also build and run our
#                           `ocicrypt_speed` example next to `openssl speed`
#   BENCH_CRYPTO_ROUNDS=N   rounds of the throughput measurements (default 3; median shown)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

IMAGE_RS=${IMAGE_RS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/image-rs}
BENCH_BUILD=${BENCH_BUILD:-0}
SCALE=${BENCH_IMAGE_SCALE:-1}
RUNS=${BENCH_RUNS:-3}
COCO_BENCH=${COCO_BENCH:-$SCRIPT_DIR/../../shared/peers/coco-image-rs-bench.xz}
BENCH_TMP=${BENCH_TMP:-/dev/shm}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_JSON=${BENCH_JSON:-}
ENCRYPTED=${BENCH_ENCRYPTED:-0}
BENCH_KEYS=${BENCH_KEYS:-$SCRIPT_DIR/../../shared/vectors/ocicrypt/keys}
ENC_PUB=${BENCH_ENC_PUB:-$BENCH_KEYS/rsa-pub.pem}
ENC_PRIV=${BENCH_ENC_PRIV:-$BENCH_KEYS/rsa-priv.pem}
CRYPTO_SPEED=${BENCH_CRYPTO_SPEED:-0}
CRYPTO_ROUNDS=${BENCH_CRYPTO_ROUNDS:-3}
SPEED_MIB=512
if [[ $ENCRYPTED == 1 ]]; then
    ONLY=${BENCH_ONLY:-ours,ours-enc,coco,coco-enc,skopeo,skopeo-enc}
else
    ENCRYPTED=0
    ONLY=${BENCH_ONLY:-ours,coco,skopeo,containerd,floor}
fi

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root (overlay mounts, containerd, chown in layers)"
if ! [[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk -v s="$SCALE" 'BEGIN{exit !(s > 0 && s <= 4)}'; then
    die "BENCH_IMAGE_SCALE must be a number in (0, 4], got '$SCALE'"
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $CRYPTO_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CRYPTO_ROUNDS must be a positive integer"
for c in ${ONLY//,/ }; do
    case $c in
    ours | coco | skopeo | containerd | floor) ;;
    ours-enc | coco-enc | skopeo-enc) ((ENCRYPTED)) || die "BENCH_ONLY: '$c' needs BENCH_ENCRYPTED=1" ;;
    *) die "BENCH_ONLY: unknown contender '$c'" ;;
    esac
done
if ((ENCRYPTED)); then
    [[ -r $ENC_PUB && -r $ENC_PRIV ]] || die "BENCH_ENCRYPTED=1: keys not found: $ENC_PUB, $ENC_PRIV (set BENCH_KEYS=DIR or BENCH_ENC_PUB/BENCH_ENC_PRIV)"
    ENC_PUB=$(realpath "$ENC_PUB")
    ENC_PRIV=$(realpath "$ENC_PRIV")
fi

# ---------------------------------------------------------------- tools
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need docker-registry docker-registry
need skopeo skopeo
need umoci umoci
need containerd containerd
need ctr containerd
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
need xz xz-utils
need openssl openssl
need pigz pigz
need jq jq
need curl curl
need busybox busybox-static
if ((${#need_pkgs[@]})); then
    log "installing: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
TIME=/usr/bin/time
BUSYBOX=$(command -v busybox)

# ---------------------------------------------------------------- scratch + cleanup
S=$(mktemp -d -p "$BENCH_TMP" pull-bench.XXXXXX)
REG_PID=
CTRD_PID=
CHILD_PID=

unmount_under() { # unmount everything mounted at or below $1, deepest first
    local root=$1 m
    awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo |
        sort -r | while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
        done
}

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

kill_tree() { # PID: TERM its descendants (deepest first), then itself
    local pid=$1 f line rest c
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }   # fields after "(comm) ": state ppid ...
        rest=${rest#* }
        [[ ${rest%% *} == "$pid" ]] || continue
        c=${f#/proc/}
        kill_tree "${c%/stat}"
    done
    kill -TERM "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $CHILD_PID ]]; then
        kill_tree "$CHILD_PID"
        wait "$CHILD_PID" 2>/dev/null
    fi
    stop_pid "$CTRD_PID"
    stop_pid "$REG_PID"
    unmount_under "$S"
    if [[ $BENCH_KEEP == 1 ]]; then
        log "scratch kept: $S"
    else
        rm -rf "$S"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$S"/{registry,results,runs,tars}
log "scratch: $S"

# ---------------------------------------------------------------- machine
echo
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) CPUs, $(uname -srm), $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), load average $LOAD_START"
log "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
log "tools: $(docker-registry --version 2>/dev/null | awk 'NR == 1 {print $NF}') registry, skopeo $(skopeo --version | awk '{print $3}'), umoci $(umoci --version | awk '{print $3}'), containerd $(containerd --version | awk '{print $3}'), $(openssl version | awk '{print $1, $2}')"

# ---------------------------------------------------------------- registry
# shellcheck source=scripts/registry.sh
. "$REPO_ROOT/scripts/registry.sh"
start_registry "$S" || die "could not start docker-registry"
PORT=$REG_PORT
REG=127.0.0.1:$PORT
REF=$REG/bench/image:v1
log "registry: http://$REG (pid $REG_PID)"

# ---------------------------------------------------------------- image
# Sizes are in bytes / counts at scale 1 and are multiplied by BENCH_IMAGE_SCALE.
sc() { awk -v v="$1" -v s="$SCALE" -v m="${2:-1}" 'BEGIN{x = int(v * s + 0.5); if (x < m) x = m; print x}'; }

# Deterministic incompressible bytes: AES-128-CTR keystream under a fixed key.
randfile() { # FILE SIZE SEED
    head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt \
        -K 5ea1b0d5ea1b0d5ea1b0d5ea1b0d0001 -iv "$(printf '%032x' "$3")" >"$1"
}

# Text-like small files (source-ish lines from a pool of random word lines).
# N files of 100 B - 8 KiB spread over NDIRS*4 directories under PREFIX.
smallfiles() { # ROOT PREFIX N NDIRS SEED
    local root=$1 prefix=$2 n=$3 ndirs=$4 seed=$5
    (
        cd "$root"
        awk -v p="$prefix" -v nd="$ndirs" 'BEGIN{for (i = 0; i < nd; i++) for (j = 0; j < 4; j++) printf "%s%03d/sub%d\n", p, i, j}' |
            xargs mkdir -p
        awk -v p="$prefix" -v n="$n" -v nd="$ndirs" -v seed="$seed" 'BEGIN{
            srand(seed)
            nw = split("fn let mut self return struct impl pub use crate match Some None Ok Err if else for while loop in as ref where type trait enum const static async await move dyn Box Vec String Option Result new len push iter map collect unwrap expect clone into from to_string format println debug info warn error import def class lambda yield with try except finally raise pass True False int str list dict set tuple print open read write close path file data value key name size count index buffer config layer image digest manifest blob registry token header body request response status the of and to a is that it on was as be at by this had not are but or have an they which one you were all {} () [] = == != -> => ; , . :: # // /* */", w, " ")
            np = 16384
            for (q = 0; q < np; q++) {
                k = 2 + int(rand() * 12); line = sprintf("%*s", int(rand() * 4) * 4, "")
                for (j = 0; j < k; j++) line = line w[1 + int(rand() * nw)] (j < k - 1 ? " " : "")
                pool[q] = line; plen[q] = length(line) + 1
            }
            for (i = 0; i < n; i++) {
                f = sprintf("%s%03d/sub%d/file%05d.%s", p, i % nd, int(i / nd) % 4, i, (i % 3 == 0 ? "py" : (i % 3 == 1 ? "rs" : "txt")))
                sz = 100 + int(rand() * 8092); s = 0; out = ""
                while (s < sz) {
                    q = int(rand() * np)
                    if (s + plen[q] > sz) { out = out substr(pool[q], 1, sz - s - 1) "\n"; s = sz }
                    else { out = out pool[q] "\n"; s += plen[q] }
                }
                printf "%s", out > f; close(f)
            }
        }'
    )
}

# Log-like compressible text: NF files totalling BYTES.
logfiles() { # DIR BYTES NF SEED
    local dir=$1 bytes=$2 nf=$3 seed=$4
    mkdir -p "$dir"
    (
        cd "$dir"
        awk -v bytes="$bytes" -v nf="$nf" -v seed="$seed" 'BEGIN{
            srand(seed)
            split("INFO INFO INFO INFO DEBUG DEBUG WARN ERROR", lv, " "); split("GET GET GET POST PUT DELETE", m, " ")
            split("items users orders blobs manifests tags sessions metrics", r, " "); split("200 200 200 200 201 204 304 400 404 500", st, " ")
            per = int(bytes / nf); t = 1700000000
            for (fi = 0; fi < nf; fi++) {
                f = sprintf("app-%02d.log", fi); s = 0
                while (s < per) {
                    t += rand() * 0.05
                    line = sprintf("%d.%03d %-5s [worker-%d] %s /api/v1/%s/%d status=%s bytes=%d dur=%dms req=%08x", int(t), int((t - int(t)) * 1000), lv[1 + int(rand() * 8)], int(rand() * 16), m[1 + int(rand() * 6)], r[1 + int(rand() * 8)], int(rand() * 100000), st[1 + int(rand() * 10)], int(rand() * 65536), int(rand() * 900), int(rand() * 4294967295))
                    if (s + length(line) + 1 > per) line = substr(line, 1, per - s - 1)
                    print line > f; s += length(line) + 1
                }
                close(f)
            }
        }'
    )
}

# Each layer is built as its own directory and tarred with GNU tar (sorted, fixed mtime,
# numeric owners, no "./" prefix), then appended with `umoci raw add-layer`, which gzips
# it the way Go image builders do. (umoci repack diffs by walking and hashing the whole
# rootfs twice per layer: minutes for this image, against seconds this way.)
# Whiteouts (.wh.NAME) and an opaque directory (.wh..wh..opq) are written explicitly.
EPOCH=1700000000
CREATED=2023-11-14T22:13:20Z

mklayer() { # DIR NAME: tar DIR into $S/tars/N.tar and append it to the image
    local dir=$1 name=$2 t
    t=$S/tars/$((${#TARS[@]})).tar
    (cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\0' | LC_ALL=C sort -z |
        tar --format=posix --pax-option=delete=atime,delete=ctime --sort=name --mtime="@$EPOCH" \
            --numeric-owner --null -T - -cf "$t")
    umoci raw add-layer --history.created "$CREATED" --history.created_by "pull-bench: $name" \
        --image "$S/oci:bench" "$t"
    TARS+=("$t")
}

build_image() {
    local L=$S/oci B=$S/build i n f sz tg
    umoci init --layout "$L"
    umoci new --image "$L:bench"
    mkdir -p "$B"/l{1,2,3,4,5,6}
    step() { # NAME: report the time since the last step
        printf '    layer %-18s built in %5.1f s\n' "$1" "$(awk -v a="$tg" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')"
        tg=$EPOCHREALTIME
    }
    tg=$EPOCHREALTIME

    # layer 1: busybox + small text files
    R=$B/l1
    mkdir -p "$R"/{bin,etc,root,tmp,var/log,usr/share,usr/bin,home/app}
    chmod 0700 "$R/root"
    chmod 1777 "$R/tmp"
    chown 1000:1000 "$R/home/app"
    cp "$BUSYBOX" "$R/bin/busybox"
    "$BUSYBOX" --list | while read -r a; do [[ $a == busybox ]] || ln -sf busybox "$R/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n' >"$R/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n' >"$R/etc/group"
    smallfiles "$R" usr/share/pkg "$(sc 25000)" "$(sc 300 6)" 1
    chown -R 1000:1000 "$R/usr/share/pkg001"
    mklayer "$R" "small files"
    step "1 (small files)"

    # layer 2: large incompressible files (~150 MB)
    R=$B/l2
    mkdir -p "$R/opt/blobs"
    for i in 0 1 2 3 4 5; do
        randfile "$R/opt/blobs/model-$i.bin" "$(sc $((25 * 1024 * 1024)))" $((100 + i))
    done
    mklayer "$R" random
    rm -rf "$R"
    step "2 (random)"

    # layer 3: log-like compressible text (~150 MB)
    R=$B/l3
    logfiles "$R/var/log/app" "$(sc $((150 * 1024 * 1024)))" 8 3
    mklayer "$R" text
    rm -rf "$R"
    step "3 (text)"

    # layer 4: medium files, half random half text (~100 MB), symlinks, hard links
    R=$B/l4
    mkdir -p "$R/opt/data"/{a,b,c,d} "$R/opt/links" "$R/opt/cache" "$R/usr/bin"
    n=$(sc 64 8)
    for ((i = 0; i < n; i++)); do
        sz=$(((i * 7919 % 2560 + 256) * 1024)) # 256 KiB .. 2.8 MiB (the count scales)
        f=$R/opt/data/$(printf '%s/f%03d' "$(echo a b c d | cut -d' ' -f$((i % 4 + 1)))" "$i")
        if ((i % 2)); then
            randfile "$f.bin" "$sz" $((1000 + i))
        else
            logfiles "$R/opt/tmp" "$sz" 1 $((2000 + i))
            mv "$R/opt/tmp/app-00.log" "$f.log"
            rmdir "$R/opt/tmp"
        fi
    done
    mapfile -t files < <(cd "$R/opt/data" && find . -type f -printf '%P\n' | LC_ALL=C sort)
    for ((i = 0; i < 10 && i < ${#files[@]}; i++)); do
        ln "$R/opt/data/${files[i]}" "$R/opt/links/hard-$i"
        ln -s "../data/${files[i]}" "$R/opt/links/rel-$i"
        ln -s "/opt/data/${files[i]}" "$R/opt/links/abs-$i"
    done
    ln -s ../data/a "$R/opt/links/dir-a"
    ln -s /nonexistent/target "$R/opt/links/dangling"
    ln -s ../../bin/busybox "$R/usr/bin/env"
    for i in 1 2 3 4 5 6 7 8; do echo "cache entry $i" >"$R/opt/cache/entry-$i"; done
    mklayer "$R" medium
    rm -rf "$R"
    step "4 (medium)"

    # layer 5: small changes: whiteouts (files, a directory), an opaque directory, edits, chmods
    R=$B/l5
    mkdir -p "$R/usr/share/pkg002" "$R/usr/share/pkg004" "$R/opt/links" "$R/opt/blobs" "$R/opt/cache" "$R/etc/app"
    (cd "$B/l1/usr/share/pkg002" && find . -type f -printf '%P\n' | LC_ALL=C sort | sed -n 1,50p) |
        while read -r f; do
            mkdir -p "$R/usr/share/pkg002/$(dirname "$f")"
            : >"$R/usr/share/pkg002/$(dirname "$f")/.wh.$(basename "$f")"
        done
    : >"$R/usr/share/.wh.pkg003"
    : >"$R/opt/links/.wh.rel-0"
    : >"$R/opt/blobs/.wh.model-5.bin"
    : >"$R/opt/cache/.wh..wh..opq"
    echo "fresh cache" >"$R/opt/cache/entry-new"
    (cd "$B/l1/usr/share/pkg004" && find . -type f -printf '%P\n' | LC_ALL=C sort | sed -n 1,20p) |
        while read -r f; do
            mkdir -p "$R/usr/share/pkg004/$(dirname "$f")"
            cp -p "$B/l1/usr/share/pkg004/$f" "$R/usr/share/pkg004/$f"
            echo "# patched" >>"$R/usr/share/pkg004/$f"
        done
    cp -p "$B/l1/etc/passwd" "$R/etc/passwd"
    chmod 0600 "$R/etc/passwd"
    cp -a "$B/l1/usr/share/pkg005" "$R/usr/share/"
    chmod -R go-rwx "$R/usr/share/pkg005"
    printf 'listen = "0.0.0.0:8080"\nworkers = 4\n' >"$R/etc/app/config.toml"
    mklayer "$R" changes
    rm -rf "$R" "$B/l1"
    step "5 (changes)"

    # layer 6: more small files
    R=$B/l6
    smallfiles "$R" srv/www/site "$(sc 3000)" "$(sc 40 2)" 6
    # a path over 100 bytes and a UTF-8 name: these need PAX headers
    f=srv/www/deep/$(printf 'level-%02d/' $(seq 1 12))index-with-a-rather-long-file-name.html
    mkdir -p "$R/$(dirname "$f")"
    echo '<html>deep</html>' >"$R/$f"
    echo 'grüße' >"$R/srv/www/deep/grüße-façade.txt"
    mklayer "$R" "more small files"
    rm -rf "$R"
    step "6 (small files)"

    umoci config --no-history --created "$CREATED" --image "$L:bench" --config.cmd /bin/sh --config.workingdir /
    umoci gc --layout "$L"
    rm -rf "$B"
}

log "building the image (scale $SCALE) ..."
t0=$EPOCHREALTIME
TARS=()
build_image
log "built in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}') s"

MANIFEST=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "bench") | .digest' "$S/oci/index.json")
mapfile -t LAYERS < <(jq -r '.layers[].digest' "$S/oci/blobs/${MANIFEST/://}")
mapfile -t DIFFIDS < <(jq -r '.config.digest' "$S/oci/blobs/${MANIFEST/://}" | sed 's|:|/|' |
    xargs -I{} jq -r '.rootfs.diff_ids[]' "$S/oci/blobs/{}")
NLAYERS=${#LAYERS[@]}
((NLAYERS == ${#TARS[@]})) || die "image has $NLAYERS layers, built ${#TARS[@]}"
BLOBS=()
COMP=0
UNCOMP=0
for ((i = 0; i < NLAYERS; i++)); do
    b=$S/oci/blobs/${LAYERS[i]/://}
    t=${TARS[i]}
    BLOBS+=("$b")
    [[ ${DIFFIDS[i]} == "sha256:$(sha256sum "$t" | cut -d' ' -f1)" ]] || die "layer $((i + 1)): tar does not match diff_id"
    bs=$(stat -c %s "$b")
    ts=$(stat -c %s "$t")
    COMP=$((COMP + bs))
    UNCOMP=$((UNCOMP + ts))
    printf '    layer %d %s: %8.1f MB gzip, %8.1f MB tar\n' "$((i + 1))" "${LAYERS[i]:7:12}" \
        "$(awk -v x="$bs" 'BEGIN{print x/1e6}')" "$(awk -v x="$ts" 'BEGIN{print x/1e6}')"
done
NFILES=$(for t in "${TARS[@]}"; do tar -tf "$t"; done | wc -l)
IMAGE_SIZES=$(awk -v n="$NLAYERS" -v c="$COMP" -v u="$UNCOMP" -v f="$NFILES" \
    'BEGIN{printf "%d layers, %d tar entries, %.1f MB uncompressed tar, %.1f MB compressed (gzip), ratio %.2f", n, f, u/1e6, c/1e6, u/c}')
log "image: $IMAGE_SIZES"
log "manifest: $MANIFEST"

log "pushing to docker://$REF"
skopeo copy -q --dest-tls-verify=false "oci:$S/oci:bench" "docker://$REF"
curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/image/manifests/v1" \
    || die "image not found in the registry after push"

REF_ENC=
if ((ENCRYPTED)); then
    # The same OCI layout, every layer encrypted by skopeo (ocicrypt: AES-256-CTR + HMAC-SHA256,
    # layer key wrapped for the RSA public key in a JWE); config and diff_ids are unchanged.
    REF_ENC=$REG/bench/image:enc
    log "pushing encrypted (skopeo --encryption-key jwe:$(basename "$ENC_PUB")) to docker://$REF_ENC"
    t0=$EPOCHREALTIME
    skopeo copy -q --dest-tls-verify=false --encryption-key "jwe:$ENC_PUB" "oci:$S/oci:bench" "docker://$REF_ENC"
    log "encrypted and pushed in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}') s"
    curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/image/manifests/enc" >"$S/manifest-enc.json" \
        || die "encrypted image not found in the registry after push"
    jq -e --argjson n "$NLAYERS" '(.layers | length) == $n and all(.layers[];
            (.mediaType | endswith("+encrypted")) and (.annotations["org.opencontainers.image.enc.keys.jwe"] // "" | length > 0))' \
        "$S/manifest-enc.json" >/dev/null || die "the :enc image does not have $NLAYERS JWE-encrypted layers: $(jq -c '[.layers[].mediaType]' "$S/manifest-enc.json")"
    ENC_COMP=$(jq '[.layers[].size] | add' "$S/manifest-enc.json")
    log "encrypted image: $NLAYERS layers $(jq -r '.layers[0].mediaType' "$S/manifest-enc.json"), $(awk -v x="$ENC_COMP" 'BEGIN{printf "%.1f", x/1e6}') MB, manifest sha256:$(sha256sum <"$S/manifest-enc.json" | cut -d' ' -f1)"
fi

# ---------------------------------------------------------------- timing helpers
# timed NAME LOG CMD...: runs CMD under /usr/bin/time; appends "wall user sys rss_kb"
# to $S/results/NAME.runs (wall from EPOCHREALTIME, ns resolution). Returns CMD's status.
# Also appends to $S/results/NAME.other the CPU seconds that the rest of the machine used
# meanwhile (all CPUs' busy time, less the contender's, the registry's and containerd's).
sys_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
pid_ticks() { # PID -> user+sys clock ticks (own + waited-for children), 0 if gone
    if [[ -n $1 && -r /proc/$1/stat ]]; then
        awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$1/stat"
    else echo 0; fi
}
HZ=$(getconf CLK_TCK)
timed() {
    local name=$1 out=$2 tf=$S/results/.time t0 t1 rc=0 b0 b1 p0 p1
    shift 2
    b0=$(sys_busy)
    p0=$(($(pid_ticks "$REG_PID") + $(pid_ticks "$CTRD_PID")))
    t0=$EPOCHREALTIME
    # In the background + wait, so that an INT/TERM runs our trap at once (in the foreground,
    # bash would wait for GNU time, which ignores SIGINT, and then not run the trap at all).
    "$TIME" -f '%e %U %S %M' -o "$tf" "$@" >"$out" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    t1=$EPOCHREALTIME
    b1=$(sys_busy)
    p1=$(($(pid_ticks "$REG_PID") + $(pid_ticks "$CTRD_PID")))
    if ((rc)); then
        warn "$name failed (exit $rc); last output:"
        tail -n 15 "$out" >&2
        return "$rc"
    fi
    tail -n 1 "$tf" | awk -v a="$t0" -v b="$t1" '{printf "%.4f %s %s %s\n", b - a, $2, $3, $4}' >>"$S/results/$name.runs"
    tail -n 1 "$tf" | awk -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" -v t="$((b1 - b0 - (p1 - p0)))" -v hz="$HZ" \
        '{o = t / hz - $2 - $3; if (o < 0) o = 0; printf "%.2f %.4f\n", o, w}' >>"$S/results/$name.other"
}

# add_sample NAME WALL USER SYS RSS_KB (for samples assembled by hand)
add_sample() { printf '%s %s %s %s\n' "$2" "$3" "$4" "$5" >>"$S/results/$1.runs"; }

# median NAME -> "wall user sys rss_kb n" of the run with the median wall time
median() {
    local f=$S/results/$1.runs
    [[ -s $f ]] || return 1
    sort -n -k1,1 "$f" | awk '{l[NR] = $0} END{print l[int((NR + 1) / 2)], NR}'
}

fresh() { # fresh empty dir
    unmount_under "$1"
    rm -rf "$1"
    mkdir -p "$1"
}

# " (plain+encrypted, interleaved)" and the like in encrypted mode, nothing otherwise
variants_note() {
    ((ENCRYPTED)) || return 0
    local IFS=+
    printf ' (%s%s)' "$*" "$( (($# > 1)) && echo ', interleaved')"
}

ORDER=()
declare -A LABEL NOTE
contender() { ORDER+=("$1"); LABEL[$1]=$2; NOTE[$1]=${3:-}; }

# ---------------------------------------------------------------- our image-rs
run_ours() {
    if [[ ! -x $IMAGE_RS && $BENCH_BUILD == 1 ]]; then
        log "building image-rs (cargo build --release -p image-rs)"
        (cd "$REPO_ROOT" && cargo build --release -p image-rs)
    fi
    if [[ ! -x $IMAGE_RS ]]; then
        log "SKIP Sealpod image-rs: $IMAGE_RS not found (set IMAGE_RS=PATH, or BENCH_BUILD=1 to build it)"
        return 0
    fi
    local layout i v
    local -a variants=()
    want ours && variants+=(plain)
    want ours-enc && variants+=(encrypted)
    for layout in flat overlay; do
        for v in "${variants[@]}"; do
            if [[ $v == encrypted ]]; then
                contender "ours-enc-$layout" "Sealpod image-rs ($layout, encrypted)" "--decryption-key $(basename "$ENC_PRIV")"
                contender "ours-enc-$layout-repull" "Sealpod image-rs ($layout, encrypted) re-pull" "same store, image present, new rootfs dir"
            else
                contender "ours-$layout" "Sealpod image-rs ($layout)"
                contender "ours-$layout-repull" "Sealpod image-rs ($layout) re-pull" "same store, image present, new rootfs dir"
            fi
        done
        log "Sealpod image-rs --layout $layout$(variants_note "${variants[@]}"): $RUNS cold runs + re-pull"
        # plain and encrypted interleaved, so that both see the same machine
        for ((i = 1; i <= RUNS; i++)); do
            for v in "${variants[@]}"; do
                if [[ $v == encrypted ]]; then
                    ours_once "$layout" "ours-enc-$layout" "$REF_ENC" --decryption-key "$ENC_PRIV"
                else
                    ours_once "$layout" "ours-$layout" "$REF"
                fi
            done
        done
    done
}

ours_once() { # LAYOUT ID REF [EXTRA ARGS...]: one cold pull, its check, and a re-pull
    local layout=$1 id=$2 ref=$3 W ok rr
    shift 3
    W=$S/runs/$id
    fresh "$W"
    ok=1
    timed "$id" "$W/cold.log" "$IMAGE_RS" pull "$ref" --rootfs "$W/rootfs" \
        --layout "$layout" --store "$W/store" --progress none "$@" || ok=0
    if ((ok)) && [[ $layout == overlay ]]; then
        mountpoint -q "$W/rootfs" || warn "overlay layout: $W/rootfs is not a mount point after pull"
    fi
    ((ok)) && check_rootfs "$W/rootfs" "$id"
    [[ $layout == overlay ]] && { umount "$W/rootfs" 2>/dev/null || true; }
    if ((ok)); then
        rr=$W/rootfs2 # a new container's rootfs (--rootfs must be absent or empty)
        timed "$id-repull" "$W/repull.log" "$IMAGE_RS" pull "$ref" --rootfs "$rr" \
            --layout "$layout" --store "$W/store" --progress none "$@" || true
        [[ $layout == overlay ]] && { umount "$rr" 2>/dev/null || true; }
    fi
    fresh "$W"
}

# A light sanity check that a contender produced the image's rootfs.
check_rootfs() { # DIR NAME
    local d=$1 problems=()
    [[ -x $d/bin/busybox ]] || problems+=("no /bin/busybox")
    [[ -f $d/var/log/app/app-00.log ]] || problems+=("no /var/log/app/app-00.log")
    [[ -e $d/usr/share/pkg003 ]] && problems+=("whited-out /usr/share/pkg003 present")
    [[ -e $d/opt/blobs/model-5.bin ]] && problems+=("whited-out /opt/blobs/model-5.bin present")
    [[ -L $d/opt/links/abs-1 ]] || problems+=("symlink /opt/links/abs-1 missing")
    [[ -e $d/opt/links/rel-0 || -L $d/opt/links/rel-0 ]] && problems+=("whited-out /opt/links/rel-0 present")
    [[ -f $d/opt/links/hard-1 ]] || problems+=("hard link /opt/links/hard-1 missing")
    [[ -e $d/opt/cache/entry-1 ]] && problems+=("/opt/cache/entry-1 present under an opaque directory")
    [[ -f $d/opt/cache/entry-new ]] || problems+=("/opt/cache/entry-new missing")
    [[ $(stat -c %a "$d/etc/passwd" 2>/dev/null) == 600 ]] || problems+=("/etc/passwd mode is not 600")
    find "$d" -name '.wh.*' -print -quit 2>/dev/null | grep -q . && problems+=("a .wh.* whiteout file is visible")
    if ((${#problems[@]})); then warn "$2: rootfs check: ${problems[*]}"; fi
}

# ---------------------------------------------------------------- CoCo image-rs
run_coco() {
    local bin=$S/coco-image-rs-bench i v id
    local -a variants=()
    if [[ ! -e $COCO_BENCH ]]; then
        log "SKIP CoCo image-rs: $COCO_BENCH not found (set COCO_BENCH=PATH)"
        return 0
    fi
    if [[ $COCO_BENCH == *.xz ]]; then xz -dc "$COCO_BENCH" >"$bin"; else cp "$COCO_BENCH" "$bin"; fi
    chmod +x "$bin"
    printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\ninsecure = true\n' "$REG" "$REG" >"$S/registries.toml"
    want coco && variants+=(plain)
    want coco-enc && variants+=(encrypted)
    for v in "${variants[@]}"; do
        if [[ $v == encrypted ]]; then
            contender coco-enc "CoCo image-rs (encrypted)" "--decrypt-config $(basename "$ENC_PRIV"); overlay bundle, 3 layers in flight"
            contender coco-enc-repull "CoCo image-rs (encrypted) re-pull" "same work dir, new bundle dir"
        else
            contender coco "CoCo image-rs" "overlay bundle (--keep-mounted, unmounted after timing), 3 layers in flight"
            contender coco-repull "CoCo image-rs re-pull" "same work dir, new bundle dir"
        fi
    done
    log "CoCo image-rs$(variants_note "${variants[@]}"): $RUNS cold runs + re-pull"
    for ((i = 1; i <= RUNS; i++)); do
        for v in "${variants[@]}"; do
            if [[ $v == encrypted ]]; then
                coco_once "$bin" coco-enc "$REF_ENC" --decrypt-config "$ENC_PRIV"
            else
                coco_once "$bin" coco "$REF"
            fi
        done
    done
    local -A what=([coco]=cold [coco-repull]=re-pull [coco-enc]="encrypted, cold" [coco-enc-repull]="encrypted, re-pull")
    for id in coco coco-repull coco-enc coco-enc-repull; do
        [[ -s $S/results/$id.json ]] && log "CoCo's own figures (${what[$id]}): $(jq -c '{build_ms, pull_ms}' "$S/results/$id.json" | paste -sd' ')"
    done
    return 0
}

coco_once() { # BIN ID REF [EXTRA ARGS...]: one cold pull, its check, and a re-pull
    local bin=$1 id=$2 ref=$3 W
    shift 3
    W=$S/runs/$id
    fresh "$W"
    # --keep-mounted: like ours (overlay), the unmount is not timed; we check the rootfs, then unmount
    if timed "$id" "$W/cold.log" "$bin" "$ref" --work-dir "$W/work" --bundle "$W/bundle" \
        --registries "$S/registries.toml" --keep-mounted "$@"; then
        grep '^{' "$W/cold.log" | tail -n 1 >>"$S/results/$id.json"
        check_rootfs "$W/bundle/rootfs" "$id"
        unmount_under "$W/bundle"
        # same WORK, new bundle dir: it refuses an existing bundle ("Failed to create bundle")
        timed "$id-repull" "$W/repull.log" "$bin" "$ref" --work-dir "$W/work" --bundle "$W/bundle2" \
            --registries "$S/registries.toml" "$@" || true
        grep '^{' "$W/repull.log" | tail -n 1 >>"$S/results/$id-repull.json" || true
    fi
    fresh "$W"
}

# ---------------------------------------------------------------- skopeo + umoci
run_skopeo() {
    local i v
    local -a variants=()
    want skopeo && variants+=(plain)
    want skopeo-enc && variants+=(encrypted)
    for v in "${variants[@]}"; do
        if [[ $v == encrypted ]]; then
            contender skopeo-enc "skopeo copy + umoci unpack (encrypted)" "skopeo copy --decryption-key $(basename "$ENC_PRIV"), then umoci unpack"
        else
            contender skopeo "skopeo copy + umoci unpack" "sequential: fetch all, then unpack"
        fi
    done
    log "skopeo copy + umoci unpack$(variants_note "${variants[@]}"): $RUNS cold runs"
    for ((i = 1; i <= RUNS; i++)); do
        for v in "${variants[@]}"; do
            if [[ $v == encrypted ]]; then
                skopeo_once skopeo-enc "$REF_ENC" --decryption-key "$ENC_PRIV"
            else
                skopeo_once skopeo "$REF"
            fi
        done
    done
}

skopeo_once() { # ID REF [EXTRA SKOPEO COPY ARGS...]
    local id=$1 ref=$2 W
    shift 2
    W=$S/runs/$id
    fresh "$W"
    # shellcheck disable=SC2016
    timed "$id" "$W/cold.log" sh -c 'r=$1 w=$2; shift 2; skopeo copy -q --src-tls-verify=false "$@" "docker://$r" "oci:$w/oci:bench" && umoci unpack --image "$w/oci:bench" "$w/bundle"' \
        sh "$ref" "$W" "$@" && check_rootfs "$W/bundle/rootfs" "$id"
    fresh "$W"
}

# ---------------------------------------------------------------- containerd
cpu_ticks() { # PID -> "user sys" clock ticks, own + waited-for children
    awk '{sub(/^.*\) /, ""); print $12 + $14, $13 + $15}' "/proc/$1/stat"
}

start_containerd() { # DIR
    local D=$1 i
    cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$D/containerd.sock"

[ttrpc]
  address = "$D/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
EOF
    CONTAINERD_DISABLE_PIGZ=1 containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
    CTRD_PID=$!
    for ((i = 0; i < 100; i++)); do
        ctr -a "$D/containerd.sock" version >/dev/null 2>&1 && return 0
        kill -0 "$CTRD_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$D/containerd.log" >&2
    stop_pid "$CTRD_PID"
    CTRD_PID=
    return 1
}

run_containerd() {
    local i D sock hz wall u s rss du0 ds0 du1 ds1 hwm nsnap
    hz=$(getconf CLK_TCK)
    contender containerd "containerd 1.6 (ctr pull)" "fetch all, then unpack (overlayfs); CPU+RSS = daemon + ctr"
    log "containerd: $RUNS cold runs (fresh root each)"
    for ((i = 1; i <= RUNS; i++)); do
        D=$S/runs/containerd
        fresh "$D"
        start_containerd "$D" || { warn "containerd did not start"; return 0; }
        sock=$D/containerd.sock
        read -r du0 ds0 < <(cpu_ticks "$CTRD_PID")
        if timed containerd-ctr "$D/pull.log" ctr -a "$sock" -n bench image pull --plain-http "$REF"; then
            read -r du1 ds1 < <(cpu_ticks "$CTRD_PID")
            hwm=$(awk '/^VmHWM/{print $2}' "/proc/$CTRD_PID/status")
            read -r wall u s rss < <(tail -n 1 "$S/results/containerd-ctr.runs")
            add_sample containerd "$wall" \
                "$(awk -v a="$u" -v t="$((du1 - du0))" -v hz="$hz" 'BEGIN{printf "%.2f", a + t / hz}')" \
                "$(awk -v a="$s" -v t="$((ds1 - ds0))" -v hz="$hz" 'BEGIN{printf "%.2f", a + t / hz}')" \
                "$((rss + hwm))"
            tail -n 1 "$S/results/containerd-ctr.other" >>"$S/results/containerd.other"
            nsnap=$(ctr -a "$sock" -n bench snapshots ls 2>/dev/null | awk 'NR > 1 && $NF == "Committed"' | wc -l)
            if ((nsnap != NLAYERS)); then
                warn "containerd: expected $NLAYERS committed snapshots after pull, found $nsnap (not unpacked?)"
            elif ((i == 1)); then
                log "containerd: unpacked, $nsnap committed overlayfs snapshots"
            fi
        fi
        stop_pid "$CTRD_PID"
        CTRD_PID=
        fresh "$D"
    done
}

# ---------------------------------------------------------------- floor
run_floor() {
    local i D
    contender floor-gunzip-sha256 "floor: gzip -dc | sha256 (all layers)"
    contender floor-tar-x "floor: tar -x of plain tars"
    log "floor: $RUNS runs of each part"
    for ((i = 1; i <= RUNS; i++)); do
        # shellcheck disable=SC2016
        timed floor-gunzip-sha256 "$S/runs/floor-gz.log" sh -c 'for b; do gzip -dc "$b" | openssl dgst -sha256 >/dev/null || exit 1; done' \
            sh "${BLOBS[@]}" || true
        D=$S/runs/floor
        fresh "$D"
        # shellcheck disable=SC2016
        timed floor-tar-x "$S/runs/floor-tar.log" sh -c 'd=$1; shift; for t; do tar --numeric-owner -xf "$t" -C "$d" || exit 1; done' \
            sh "$D" "${TARS[@]}" || true
        fresh "$D"
    done
}

# ---------------------------------------------------------------- crypto throughput
SPEED_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/ocicrypt_speed
build_speed() { # built before the pulls, so that the build does not overlap a timed run
    log "building the ocicrypt_speed example (cargo build --release -p image-rs --example ocicrypt_speed)"
    if ! (cd "$REPO_ROOT" && cargo build --release -q -p image-rs --example ocicrypt_speed); then
        warn "could not build the ocicrypt_speed example; ours is left out of the throughput comparison"
        return 0
    fi
}

# openssl speed: MB/s (10^6 B/s) in the 16384-byte column of the row of FILE's results
openssl_16k() { # FILE
    awk '$1 == "type" {ok = ($(NF - 1) == "16384" && $NF == "bytes"); next}
         ok && NF > 2 && $NF ~ /k$/ {v = $NF; sub(/k$/, "", v); printf "%.0f\n", v / 1000; exit}' "$1"
}
ours_mbs() { # FILE PREFIX: the MB/s figure of the example's line starting with PREFIX
    awk -v p="$2" 'index($0, p) == 1 {for (i = 1; i <= NF; i++) if ($i == "MB/s") {print $(i - 1); exit}}' "$1"
}

# Each figure is measured CRYPTO_ROUNDS times, openssl and ours alternating, and the
# median is shown with the range: on a VM one measurement can be off by a third.
CRYPTO_LINES=()
CRYPTO_JSON=
crypto_speed() {
    local f=$S/results/speed k i v
    local -A med=() rng=()
    log "crypto throughput, $CRYPTO_ROUNDS rounds: openssl speed -evp aes-256-ctr -seconds 1; openssl speed -hmac sha256 -seconds 1$(
        [[ $CRYPTO_SPEED == 1 && -x $SPEED_BIN ]] && echo "; $SPEED_BIN $SPEED_MIB (ocicrypt_speed example, $SPEED_MIB MiB in 1 MiB buffers)")"
    for ((i = 1; i <= CRYPTO_ROUNDS; i++)); do
        openssl speed -evp aes-256-ctr -seconds 1 >"$f-aes.txt" 2>/dev/null || warn "openssl speed -evp aes-256-ctr failed"
        openssl speed -hmac sha256 -seconds 1 >"$f-hmac.txt" 2>/dev/null || warn "openssl speed -hmac sha256 failed"
        v=$(openssl_16k "$f-aes.txt") && [[ -n $v ]] && echo "$v" >>"$f.aes"
        v=$(openssl_16k "$f-hmac.txt") && [[ -n $v ]] && echo "$v" >>"$f.hmac"
        if [[ $CRYPTO_SPEED == 1 && -x $SPEED_BIN ]]; then
            if "$SPEED_BIN" "$SPEED_MIB" >"$f-ours.txt" 2>&1; then
                ours_mbs "$f-ours.txt" AES-256-CTR >>"$f.o_aes"
                ours_mbs "$f-ours.txt" HMAC-SHA256 >>"$f.o_hmac"
                ours_mbs "$f-ours.txt" DecryptReader >>"$f.o_dec"
                ours_mbs "$f-ours.txt" EncryptReader >>"$f.o_enc"
                ours_mbs "$f-ours.txt" BlobDecryptor >>"$f.o_pull"
            else
                warn "ocicrypt_speed failed: $(tail -n 3 "$f-ours.txt")"
            fi
        fi
    done
    [[ -s $f.aes && -s $f.hmac ]] || { warn "could not read openssl speed's 16384-byte column"; return 0; }
    # openssl has no combined figure: one thread doing both, one after the other
    paste -d' ' "$f.aes" "$f.hmac" | awk '{printf "%.0f\n", 1 / (1 / $1 + 1 / $2)}' >"$f.both"
    # what the pull does per encrypted byte: CTR, the HMAC and two SHA-256 digests
    # (openssl's SHA-256 runs at its HMAC rate on large buffers)
    paste -d' ' "$f.aes" "$f.hmac" | awk '{printf "%.0f\n", 1 / (1 / $1 + 3 / $2)}' >"$f.pull"
    for k in aes hmac both pull o_aes o_hmac o_dec o_enc o_pull; do
        [[ -s $f.$k ]] || continue
        med[$k]=$(sort -n "$f.$k" | awk '{v[NR] = $1} END{print v[int((NR + 1) / 2)]}')
        rng[$k]=$(sort -n "$f.$k" | awk 'NR == 1 {lo = $1} {hi = $1} END{print (NR > 1 ? lo "-" hi : "")}')
    done
    cell() { [[ -n ${med[$1]:-} ]] && printf '%s%s' "${med[$1]}" "${rng[$1]:+ (${rng[$1]})}" || printf -- '-'; }
    r() { [[ -n ${med[$1]:-} && -n ${med[$2]:-} ]] && awk -v a="${med[$1]}" -v b="${med[$2]}" 'BEGIN{printf "%.2f", a / b}' || printf -- '-'; }
    CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "crypto throughput, MB/s (10^6 B/s), one core" "openssl, 16 KiB" "ours, 1 MiB buffers" "ours/ssl")")
    CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "AES-256-CTR" "$(cell aes)" "$(cell o_aes)" "$(r o_aes aes)")")
    CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "HMAC-SHA256" "$(cell hmac)" "$(cell o_hmac)" "$(r o_hmac hmac)")")
    CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "AES-256-CTR + HMAC-SHA256 (decrypt + verify)" "$(cell both)*" "$(cell o_dec)" "$(r o_dec both)")")
    CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "pull: CTR + HMAC + 2x SHA-256 (interleaved)" "$(cell pull)**" "$(cell o_pull)" "$(r o_pull pull)")")
    [[ -n ${med[o_enc]:-} ]] && CRYPTO_LINES+=("$(printf '%-44s | %20s | %20s | %8s' "encrypt: CTR + HMAC + 2x SHA-256 (copy)" "" "$(cell o_enc)" "")")
    CRYPTO_LINES+=("  median (min-max) of $CRYPTO_ROUNDS rounds; * openssl has no combined figure: 1 / (1/AES + 1/HMAC), one thread doing both")
    CRYPTO_LINES+=("  ** 1 / (1/AES + 3/HMAC): one thread doing CTR, the HMAC and two SHA-256 one after the other; ours runs the three hashes as interleaved SHA-NI streams (BlobDecryptor)")
    [[ $CRYPTO_SPEED == 1 ]] || CRYPTO_LINES+=("  ours: BENCH_CRYPTO_SPEED=1 runs the ocicrypt_speed example (needs a build)")
    if [[ -n ${ENC_COMP:-} ]]; then
        CRYPTO_LINES+=("  decrypting + verifying this image's $(awk -v x="$ENC_COMP" 'BEGIN{printf "%.0f", x/1e6}') MB of encrypted layers (CTR, HMAC, blob and plain digests): $(awk -v x="$ENC_COMP" -v r="${med[o_pull]:-${med[pull]}}" 'BEGIN{printf "%.2f", x / 1e6 / r}') s of CPU at $([[ -n ${med[o_pull]:-} ]] && echo "our" || echo "openssl's") median rate")
    fi
    arr() { if [[ -s $f.$1 ]]; then jq -sc . "$f.$1"; else echo '[]'; fi; }
    CRYPTO_JSON=$(jq -cn --argjson aes "$(arr aes)" --argjson hmac "$(arr hmac)" --argjson both "$(arr both)" \
        --argjson oa "$(arr o_aes)" --argjson oh "$(arr o_hmac)" --argjson od "$(arr o_dec)" --argjson oe "$(arr o_enc)" \
        --argjson pull "$(arr pull)" --argjson op "$(arr o_pull)" \
        --arg ov "$(openssl version)" --argjson mib "$SPEED_MIB" \
        'def m: if length == 0 then null else sort | .[(length - 1) / 2 | floor] end;
         def f: {median: m, rounds: .};
         {crypto_mb_per_s: {openssl: {version: $ov, block_bytes: 16384, "aes-256-ctr": ($aes | f), "hmac-sha256": ($hmac | f), "ctr+hmac_sequential": ($both | f), "ctr+hmac+2sha_sequential": ($pull | f)},
          ours: {buffer_bytes: 1048576, total_mib: $mib, "aes-256-ctr": ($oa | f), "hmac-sha256": ($oh | f), decrypt_reader: ($od | f), encrypt_reader: ($oe | f), blob_decryptor: ($op | f)}}}')
}

# ---------------------------------------------------------------- run
echo
((ENCRYPTED)) && [[ $CRYPTO_SPEED == 1 ]] && build_speed
if want ours || want ours-enc; then run_ours; fi
if want coco || want coco-enc; then run_coco; fi
if want skopeo || want skopeo-enc; then run_skopeo; fi
want containerd && run_containerd
want floor && run_floor
((ENCRYPTED)) && crypto_speed

# floor = sum of the two parts' medians
if m1=$(median floor-gunzip-sha256) && m2=$(median floor-tar-x); then
    read -r w1 u1 s1 r1 _ <<<"$m1"
    read -r w2 u2 s2 r2 _ <<<"$m2"
    awk -v w1="$w1" -v w2="$w2" -v u1="$u1" -v u2="$u2" -v s1="$s1" -v s2="$s2" -v r1="$r1" -v r2="$r2" \
        'BEGIN{printf "%.4f %.2f %.2f %d\n", w1 + w2, u1 + u2, s1 + s2, (r1 > r2 ? r1 : r2)}' >"$S/results/floor.runs"
    contender floor "floor (sum of the two parts)"
fi

# ---------------------------------------------------------------- report
# ratios: cold runs against the cold baselines, re-pulls against the baselines' re-pulls;
# encrypted rows against the encrypted baselines, and (/ plain) against their plain twin
base_of() { # ID flat|coco|plain -> ID of that baseline for ID
    local c=$1 r='' e=''
    [[ $c == *-repull ]] && r=-repull
    [[ $c == *-enc* ]] && e=-enc
    case $2 in
    flat) echo "ours$e-flat$r" ;;
    coco) echo "coco$e$r" ;;
    plain) [[ -n $e ]] && echo "${c/-enc/}" ;;
    esac
    return 0
}
wall_of() { median "$1" 2>/dev/null | awk '{print $1}' || true; }
ratio() { [[ -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}' || printf -- '-'; }

echo
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) CPUs, $(uname -sr); image: $IMAGE_SIZES; $RUNS cold runs each, median by wall time"
log "load average at start: $LOAD_START, at end: $LOAD_END"
# background CPU: what the rest of the machine used while a contender was timed. It is
# more direct than the load average (a decaying mean that still shows work which ended
# before the runs), so when it is there, it decides the warning.
if bg=$(cat "$S"/results/*.other 2>/dev/null | awk 'NF == 2 {o += $1; w += $2; if ($2 >= 0.5 && $1 / $2 > m) m = $1 / $2} END{if (w > 0) printf "%.1f %.1f %.2f %.2f", o, w, o / w, m}') && [[ -n $bg ]]; then
    read -r bg_o bg_w bg_avg bg_max <<<"$bg"
    log "background CPU during the timed runs (all CPUs' busy time less the contender's, the registry's, containerd's): $bg_o CPU-s over $bg_w s, on average $bg_avg CPUs busy, worst run (of those >= 0.5 s) $bg_max"
    if awk -v a="$bg_avg" -v m="$bg_max" 'BEGIN{exit !(a >= 0.15 || m >= 0.5)}'; then
        warn "other processes used CPU during the timed runs (above); timings are not clean"
    elif awk -v a="${LOAD_START%% *}" -v b="${LOAD_END%% *}" 'BEGIN{exit !(a >= 1 || b >= 2)}'; then
        log "(the load average was high at the start or the end, but the timed runs had the CPUs to themselves)"
    fi
elif awk -v a="${LOAD_START%% *}" -v b="${LOAD_END%% *}" 'BEGIN{exit !(a >= 1 || b >= 2)}'; then
    warn "the machine was busy with other work (load average above); timings are not clean"
fi
LW=42
NW=40
for c in "${ORDER[@]}"; do
    ((${#LABEL[$c]} > LW)) && LW=${#LABEL[$c]}
    ((${#LABEL[$c]} + 1 > NW)) && NW=$((${#LABEL[$c]} + 1))
done
hdr=$(printf '%-*s | %9s | %7s | %7s | %8s | %8s | %8s' "$LW" contender "wall s" "user s" "sys s" "RSS MB" "/ flat" "/ CoCo")
sep="$(printf '%*s' $((LW + 1)) '' | tr ' ' -)+-----------+---------+---------+----------+----------+---------"
if ((ENCRYPTED)); then
    hdr+=$(printf ' | %8s' "/ plain")
    sep+="-+---------"
fi
printf '%s\n%s\n' "$hdr" "$sep"
: >"$S/results/results.jsonl"
for c in "${ORDER[@]}"; do
    if ! m=$(median "$c"); then
        printf '%-*s | %9s |\n' "$LW" "${LABEL[$c]}" FAILED
        continue
    fi
    read -r wall u s rss n <<<"$m"
    bf=$(wall_of "$(base_of "$c" flat)")
    bc=$(wall_of "$(base_of "$c" coco)")
    printf '%-*s | %9.3f | %7.2f | %7.2f | %8.1f | %8s | %8s' "$LW" "${LABEL[$c]}" "$wall" "$u" "$s" \
        "$(awk -v r="$rss" 'BEGIN{print r / 1024}')" "$(ratio "$wall" "$bf")" "$(ratio "$wall" "$bc")"
    bp=
    if ((ENCRYPTED)); then
        b=$(base_of "$c" plain)
        [[ -n $b ]] && bp=$(wall_of "$b")
        printf ' | %8s' "$(ratio "$wall" "$bp")"
    fi
    printf '\n'
    ref=$REF
    [[ $c == *-enc* ]] && ref=$REF_ENC
    other='[]'
    [[ -s $S/results/$c.other ]] && other=$(awk '{print $1}' "$S/results/$c.other" | jq -sc .)
    jq -cn --arg id "$c" --arg lbl "${LABEL[$c]}" --arg note "${NOTE[$c]}" \
        --argjson wall "$wall" --argjson user "$u" --argjson sys "$s" --argjson rss_kb "$rss" --argjson n "$n" \
        --rawfile runs "$S/results/$c.runs" --arg ref "$ref" --argjson comp "$COMP" --argjson uncomp "$UNCOMP" \
        --arg scale "$SCALE" --argjson nproc "$(nproc)" --arg kernel "$(uname -r)" \
        --arg ls "$LOAD_START" --arg le "$LOAD_END" --argjson other "$other" \
        --argjson enc "$ENCRYPTED" --arg bp "$bp" \
        '{contender: $id, label: $lbl, note: $note, median: {wall_s: $wall, user_s: $user, sys_s: $sys, peak_rss_kb: $rss_kb},
          runs: ($runs | split("\n") | map(select(length > 0) | split(" ") | map(tonumber) | {wall_s: .[0], user_s: .[1], sys_s: .[2], peak_rss_kb: .[3]})
                | if ($other | length) == length then [., $other] | transpose | map(.[0] + {background_cpu_s: .[1]}) else . end),
          image: {compressed_bytes: $comp, uncompressed_tar_bytes: $uncomp, scale: ($scale | tonumber)},
          machine: {nproc: $nproc, kernel: $kernel, loadavg_start: $ls, loadavg_end: $le}}
         + if $enc == 1 then {ref: $ref, encrypted: ($id | contains("-enc")),
                             wall_over_plain: (if $bp == "" then null else ($wall / ($bp | tonumber) * 1000 | round / 1000) end)} else {} end' \
        >>"$S/results/results.jsonl"
done
echo
for c in "${ORDER[@]}"; do
    [[ -n ${NOTE[$c]} ]] && printf '  %-*s %s\n' "$NW" "${LABEL[$c]}:" "${NOTE[$c]}"
done
echo "  '/ flat' and '/ CoCo': wall time over Sealpod image-rs (flat) and over CoCo image-rs; re-pull rows over their re-pulls."
if ((ENCRYPTED)); then
    echo "  Encrypted rows are over the encrypted Sealpod image-rs (flat) and CoCo image-rs rows; '/ plain': over the same contender on the plain image."
fi
echo "  RSS is the peak resident set of the largest single process (GNU time), except containerd (daemon VmHWM + ctr)."

if ((ENCRYPTED)); then
    # enc_vs A B [target]: A over B in wall time and user+sys CPU (medians), and the peak RSS
    # of both (median run, and the largest of all runs: what the RSS target is checked on)
    enc_vs() {
        local ma mb xa xb
        ma=$(median "$1" 2>/dev/null) && mb=$(median "$2" 2>/dev/null) || return 1
        xa=$(awk '$4 > m {m = $4} END{print m}' "$S/results/$1.runs")
        xb=$(awk '$4 > m {m = $4} END{print m}' "$S/results/$2.runs")
        awk -v a="$ma" -v b="$mb" -v xa="$xa" -v xb="$xb" -v t="${3:-}" 'BEGIN{
            split(a, x, " "); split(b, y, " ")
            w = x[1] / y[1]; c = (x[2] + x[3]) / (y[2] + y[3])
            printf "%.3f wall, %.2f user+sys CPU (%.2f vs %.2f s), peak RSS %.1f vs %.1f MiB (max of runs %.1f vs %.1f)", w, c, x[2] + x[3], y[2] + y[3], x[4] / 1024, y[4] / 1024, xa / 1024, xb / 1024
            if (t != "") printf "; targets: wall <= 1.10 %s, RSS <= 32 MiB in every run %s", (w <= 1.10 ? "met" : "MISSED"), (xa <= 32 * 1024 ? "met" : "MISSED")
        }'
    }
    echo
    for l in flat overlay; do
        v=$(enc_vs "ours-enc-$l" "ours-$l" target) && log "Sealpod image-rs ($l), encrypted / plain: $v"
    done
    v=$(enc_vs coco-enc coco) && log "CoCo image-rs, encrypted / plain: $v"
    v=$(enc_vs skopeo-enc skopeo) && log "skopeo copy + umoci unpack, encrypted / plain: $v"
    for l in flat overlay; do
        v=$(enc_vs "ours-enc-$l" coco-enc) && log "encrypted pull, Sealpod image-rs ($l) / CoCo image-rs: $v"
    done
    for l in flat overlay; do
        v=$(enc_vs "ours-enc-$l" skopeo-enc) && log "encrypted pull, Sealpod image-rs ($l) / skopeo + umoci: $v"
    done
fi
if ((${#CRYPTO_LINES[@]})); then
    echo
    printf '%s\n' "${CRYPTO_LINES[@]}"
    [[ -n $CRYPTO_JSON ]] && printf '%s\n' "$CRYPTO_JSON" >>"$S/results/results.jsonl"
fi
echo
log "JSON lines (also in $S/results/results.jsonl while the scratch dir exists):"
cat "$S/results/results.jsonl"
if [[ -n $BENCH_JSON ]]; then cp "$S/results/results.jsonl" "$BENCH_JSON"; fi
